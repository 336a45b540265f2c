// Package state is the daemon's database: jobs and their steps, the events
// of every transition, the points jobs pin, the protection state of each VM
// and the fencing flags that keep a failed-over source from coming back by
// itself.
//
// It is SQLite through modernc.org/sqlite (pure Go, no cgo), in WAL mode
// with synchronous=FULL: a write that returns nil is committed and on disk.
// One connection writes (BEGIN IMMEDIATE, so writers queue instead of
// failing on upgrade); a small pool reads. The schema is versioned in code
// (migrations.go) and a database from a newer standby is refused. SQL stays
// portable (no SQLite-only syntax beyond the pragmas in Open) so that a
// PostgreSQL backend can follow.
//
// It imports clock and nothing else from the project: callers such as
// recovery declare the small interface they need and the daemon adapts.
package state
