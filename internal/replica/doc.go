// Package replica is the recovery-side store of one disk and its recovery
// points: a raw sparse base image at the newest committed point, one undo file
// per older point holding the pre-images of the blocks the next point
// overwrote, the staging of the incoming point, and the catalog that says
// which points exist. docs/format.md describes the files.
//
// It owns applying a point crash-safely (stage, undo, intent, overwrite,
// commit), views of any retained point, writable overlays on views, retention
// with thinning, pins, verification against the block hashes recorded at
// commit, and export to a sparse raw file.
//
// It imports no other package of the project but internal/clock. BLAKE3 comes
// from zeebo/blake3; the file format, the group commit of staged extents and
// the undo merge are written here because no library keeps undo-based point
// stores.
package replica
