// Package local is the provider that runs a site on one machine without
// root. Networks are modelled, not built: each resource is kept in memory
// and in a small JSON state file (so that List survives a restart), with
// Azure's reference and dependency rules. A machine is its boot command run
// as a process in its own process group, its disks are files
// (STANDBY_DISK_<NAME>), and its address is a loopback address
// (STANDBY_IP_<n>, 127.x.y.z) derived from the lab, site and IP, so that two
// sites with the same IPs never collide. Checks are HTTP or TCP probes whose
// spec address is rewritten to the loopback address of the machine that
// holds it where it is active. Stopping a machine sends SIGTERM to its
// group, then SIGKILL; a machine whose main process exits has the rest of
// its group killed, so no process outlives it.
//
// It imports provider, spec and clock; nothing imports it but cli and tests.
package local
