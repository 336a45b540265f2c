package replica

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// FormatVersion is the version of the on-disk format this package writes
// and the newest it reads (docs/format.md).
const FormatVersion = 1

// File names inside a replica directory (docs/format.md).
const (
	catalogName = "catalog.json"
	intentName  = "intent.json"
	baseName    = "base"
	lockName    = "lock"
	pointsDir   = "points"
	undoDir     = "undo"
	stagingDir  = "staging"
)

// catalog is the list of committed points. It is replaced atomically, so the
// points it names are exactly the committed ones.
type catalog struct {
	Format    int            `json:"format"`
	Size      int64          `json:"size"`
	BlockSize int64          `json:"blockSize"`
	Points    []catalogPoint `json:"points"`
}

type catalogPoint struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Pinned bool      `json:"pinned,omitempty"`
	Bytes  int64     `json:"bytes"`
	// UndoGen names the undo index in force (undo/SEQ-GEN.index); 0 for the
	// newest point, which has no undo.
	UndoGen uint64 `json:"undoGen,omitempty"`
}

func (c *catalog) clone() *catalog {
	n := *c
	n.Points = append([]catalogPoint(nil), c.Points...)
	return &n
}

func (c *catalog) find(seq uint64) int {
	for i, p := range c.Points {
		if p.Seq == seq {
			return i
		}
	}
	return -1
}

func (c *catalog) newest() uint64 {
	if len(c.Points) == 0 {
		return 0
	}
	return c.Points[len(c.Points)-1].Seq
}

func (c *catalog) marshal() []byte {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		panic(err) // plain structs always marshal
	}
	return append(b, '\n')
}

// parseCatalog reads a catalog and checks it makes sense before anything
// trusts it.
func parseCatalog(name string, b []byte) (*catalog, error) {
	var probe struct {
		Format *int `json:"format"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%s is truncated or damaged (%v): restore it from a copy, or recreate the replica and sync again", name, err)
	}
	if probe.Format == nil {
		return nil, fmt.Errorf("%s has no format version: it is not a replica catalog", name)
	}
	if *probe.Format > FormatVersion {
		return nil, fmt.Errorf("%s is format version %d, newer than this standby reads (%d): upgrade standby", name, *probe.Format, FormatVersion)
	}
	if *probe.Format < 1 {
		return nil, fmt.Errorf("%s has format version %d: not a valid replica catalog", name, *probe.Format)
	}
	var c catalog
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): restore it from a copy, or recreate the replica and sync again", name, err)
	}
	if c.Size <= 0 || c.BlockSize <= 0 || c.BlockSize%directAlign != 0 {
		return nil, fmt.Errorf("%s is damaged: size %d, block size %d", name, c.Size, c.BlockSize)
	}
	for i, p := range c.Points {
		if i > 0 && p.Seq <= c.Points[i-1].Seq {
			return nil, fmt.Errorf("%s is damaged: point %d follows point %d", name, p.Seq, c.Points[i-1].Seq)
		}
		last := i == len(c.Points)-1
		if last != (p.UndoGen == 0) {
			return nil, fmt.Errorf("%s is damaged: point %d has undo generation %d", name, p.Seq, p.UndoGen)
		}
	}
	return &c, nil
}

func readCatalog(path string) (*catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s not found: not a replica directory (create one with a first sync)", path)
		}
		return nil, err
	}
	return parseCatalog(path, b)
}
