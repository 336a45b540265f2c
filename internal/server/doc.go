// Package server is the daemon's HTTP API: jobs, their events as a
// server-sent stream, health, Prometheus metrics, and bearer-token auth
// with the roles reader, operator and admin. It speaks JSON with the wire
// types of internal/api, on the standard library's mux; openapi.yaml
// describes it.
//
// It also serves the dashboard under /ui/: read-only HTML pages of
// replication (each VM's state, RPO and points on a timeline), where each
// plan stands, and each job's report (RTO, data loss, steps, checks). The
// pages are rendered with html/template from files embedded in the binary,
// with one small script that keeps them current, so they work offline. A
// browser signs in at /ui/login with an API token and then carries a session
// cookie; the token itself is never stored in the browser, a URL or a log.
//
// It sees recovery through the small Jobs and Operations interfaces it
// declares, and may import api, recovery, netplan, spec and clock; never
// state, provider or replication (the daemon wires those).
package server
