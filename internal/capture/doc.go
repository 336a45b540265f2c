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
// The state file is written only when the caller says the point is durable
// at the replica (Cut.Commit). A missing, stale or damaged state never leads
// to silence: the scan then sends every block, as for a full resync.
//
// capture imports no other package of this module but clock.
package capture
