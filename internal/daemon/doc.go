// Package daemon assembles a running standby: the state database, the
// protection of every VM (replication), the sites' providers, the job
// driver and its runner, and the HTTP server. `standby up` and `standby
// demo` run it; the adapters that let the layers meet (replication's
// protector as recovery's Protection, the state database as recovery's
// Store) live here, because neither side may import the other.
//
// It imports anything but cli.
package daemon
