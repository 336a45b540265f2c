// Package capture finds what changed on a source disk since the last
// committed recovery point, at a cut, and hands out those changed extents
// with their content.
//
// The scan capture (Scan) works on any file or block device: it reads the
// whole disk in blocks (4 MiB by default), hashes each block with BLAKE3
// (zeebo/blake3) and compares the hashes with those of the previous point,
// which it keeps in a small state file at the source. Only blocks whose hash
// differs are emitted; a block that became all zeros is emitted as a hole,
// and on the first point of a new (all-zero) replica zero blocks are not
// emitted at all. Reading and hashing run in parallel, one worker per core,
// in a fixed number of reused buffers, so memory stays bounded whatever the
// disk size. The cost of a scan follows the disk size; a tracked capture,
// whose cost follows the change, is a separate implementation.
//
// A scan is a consistent cut only of a quiet disk: the caller stops or
// freezes writers, or scans a snapshot.
//
// The tracked capture (Tracked, CutTracked, Serve) is in the write path: the
// disk is served through FUSE (hanwen/go-fuse, its fs package) as a plain
// file, in direct I/O mode, and every write is passed to the backing file
// and marks its range dirty at a fine grain (64 KiB by default, 4-64 KiB)
// before it is answered; fsync on the file fsyncs the backing file. A cut
// across several disks (a VM, or a consistency group) is a brief write
// barrier on all of them that swaps their dirty maps; a unit of the cut
// written again before it is read for shipping is first copied aside, so
// what is shipped is exactly the disk at the cut. Its cost follows the
// change, not the disk size. A write-intent bitmap kept durably at the
// source, and a clean-shutdown record, make a gap in tracking (a crash, a
// restart, a resize, another replica) always end in a resync of the
// affected disk, of only the regions written when that is known, never in
// silence. The bitmap, the clean-shutdown record and the copy-aside logic
// are written here: no library tracks writes for replication.
//
// The state file is written only when the caller says the point is durable
// at the replica (Cut.Commit). A missing, stale or damaged state never leads
// to silence: the scan then sends every block, as for a full resync.
//
// Serving (Serve, ServeFile) is the FUSE layer of every disk standby hands
// to a machine: tracked source disks, and recovered machines' overlays.
// STANDBY_FUSE_DEBUG=1 logs every FUSE request and reply to standard error.
//
// capture imports no other package of this module but clock.
package capture
