// Package ship moves the extents of a recovery point from a source to a
// receiver at the recovery site, over N parallel TCP streams
// (uploadThreadsPerVM, 1-32, default 4), optionally in TLS 1.3 with client
// certificates.
//
// The sender side is a Client for one replica (one disk), named by a URL
// such as https://dr.example:7443/vm1/data. Its Txn stages one point:
// WriteExtent compresses the extent with zstd at the fastest level (in
// pieces; a piece that does not shrink is sent raw), sends it with its
// BLAKE3 hash on the least busy stream and returns once the receiver has
// decompressed it, checked the hash and staged it durably. A refused extent
// (damaged on the way) is sent again. A broken stream is redialled with
// exponential backoff and jitter; before an unacknowledged extent is sent
// again, the receiver is asked which extents of the open point are already
// staged, and those are never resent. A token bucket shared by the streams
// of a VM caps the bandwidth. The loop that feeds a Txn (cut, capture,
// commit) belongs to replication, whose Txn interface a Txn satisfies.
//
// The Receiver side serves many replicas, one directory per disk under a
// root, named by the URL path (vm/disk). It holds each extent in memory
// only until it is staged: at most two per stream.
//
// The wire format is written here (wire.go): no library frames
// acknowledged, resumable extent transfer. zstd is klauspost/compress, the
// hash zeebo/blake3.
//
// ship imports no package of this module but clock, capture and replica.
package ship
