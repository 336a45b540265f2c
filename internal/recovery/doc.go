// Package recovery runs recovery plans as jobs. This part is the generic
// step driver: a job is a list of steps with dependencies (a DAG, built from
// a netplan runbook and the plan's groups), each with an action, a
// resource, a timeout, retries with exponential backoff and a failure
// policy. The caller executes steps through an Executor it provides; the
// driver decides what runs when, persists every transition through a Store
// before acting on it, emits an event for each, and resumes a job after a
// crash where it stood. The operations (drill, failover, commit,
// reprotect, failback) are built on it.
//
// Step executors must be idempotent: after a crash a step that was running
// runs again, and its effect must happen once.
//
// It may import clock, spec, netplan and api; it declares the interfaces it
// needs (Store, Executor) and never imports their implementations (state,
// provider, replication): the daemon wires them.
package recovery
