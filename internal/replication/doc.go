// Package replication runs the loop of one protected disk: cut, capture,
// ship, commit. Sync takes one recovery point: it scans the source with
// capture, hands the changed extents to a Target through N parallel streams
// (uploadThreadsPerVM, 1-32, default 4), commits the point with the block
// hashes of the whole disk, and only then records those hashes at the
// source. Memory stays within 2 x streams x block size of block buffers.
//
// Group runs the continuous loop of a consistency group (one VM, or
// several cut together) over tracked disks: points on the policy's
// schedule (crashConsistentFrequency, 0 for continuous: each shipped batch
// commits a point; appConsistentFrequency with the VM's quiesce commands
// around the cut), every disk of every VM cut at one instant, each VM's
// disks shipped through its uploadThreadsPerVM streams, retention applied
// as points arrive. It keeps a state per VM and disk (initial-sync with
// progress and ETA, protected, resyncing, paused, error with the reason),
// the RPO from the newest committed cut, an alert above rpoThreshold, and
// the barrier pauses, all in Status.
//
// Protector keeps whole-VM points for the daemon, with pins, fencing, the
// final point of a planned failover and the reverse copy of reprotect. A
// tracked VM's disks are served to its machine at their Served paths and
// cut together by a Group of one VM (Cycle, the daemon keeping the
// schedule); a scanned VM's disks are synced in turn. Disks gives a
// recovered machine its disks at a point at once: writable overlays on
// replica views, served through the same FUSE layer, recorded so that a
// new process serves them again (TakeReserved), and released by drill cleanup
// and at the end of a failback.
//
// A Target is where points go: Local wraps a replica in this process; a
// receiver across the network is another Target.
//
// replication may import capture, replica, ship, spec and clock, and
// nothing above them (cli, server, recovery).
package replication
