// Package server is the daemon's HTTP API: jobs, their events as a
// server-sent stream, health, Prometheus metrics, and bearer-token auth
// with the roles reader, operator and admin. It speaks JSON with the wire
// types of internal/api, on the standard library's mux; openapi.yaml
// describes it.
//
// It sees recovery through the small Jobs interface it declares, and may
// import api, recovery, netplan, spec and clock; never state, provider or
// replication (the daemon wires those).
package server
