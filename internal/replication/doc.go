// Package replication runs the loop of one protected disk: cut, capture,
// ship, commit. Sync takes one recovery point: it scans the source with
// capture, hands the changed extents to a Target through N parallel streams
// (uploadThreadsPerVM, 1-32, default 4), commits the point with the block
// hashes of the whole disk, and only then records those hashes at the
// source. Memory stays within 2 x streams x block size of block buffers.
//
// A Target is where points go: Local wraps a replica in this process; a
// receiver across the network is another Target.
//
// replication may import capture, replica, ship, spec and clock, and
// nothing above them (cli, server, recovery).
package replication
