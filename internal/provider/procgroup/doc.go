// Package procgroup manages the process group of a machine that a provider
// runs as a process (local and netlab): whether it still runs, its members,
// signals, and a stop that escalates from SIGTERM to SIGKILL. A group is
// named by its leader's pid and start time, so a pid the kernel has given to
// another process is never signalled.
//
// It imports nothing from the project.
package procgroup
