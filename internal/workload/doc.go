// Package workload holds the ledger: a small service used as the machine in
// demos and drills. It appends checksummed, numbered records to its data disk
// at a steady rate and, on start, recovers up to the last complete record, so
// that after a failover it can say exactly how many records the recovery
// point held: the data loss, measured.
//
// The on-disk layout is written by hand (ledger.go): a header block, then
// fixed 512-byte record slots used as a ring. Each record carries the
// checksum of its predecessor, so the records form a hash chain; a torn or
// stale record breaks the chain and is detected, reported and skipped.
// Checksums are CRC-64 (ECMA) from the standard library: they guard against
// torn writes, not against tampering.
//
// It imports no other internal package but clock.
package workload
