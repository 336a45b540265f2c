package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"
)

// Damage is one block whose content does not match its recorded hash.
type Damage struct {
	Block  int64  `json:"block"`
	Offset int64  `json:"offset"`
	File   string `json:"file"` // "base", "undo N", "staging", or "source"
	Path   string `json:"path"`
}

// VerifyError lists the damaged blocks found in a point.
type VerifyError struct {
	Op     string // "verify", "export" or "commit"
	Seq    uint64
	Damage []Damage
	Hint   string
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	op := e.Op
	if op == "" {
		op = "verify"
	}
	fmt.Fprintf(&b, "replica: %s point %d: ", op, e.Seq)
	for i, d := range e.Damage {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Damage)-3)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		if d.File == "source" {
			fmt.Fprintf(&b, "block %d (offset %d) differs from the source", d.Block, d.Offset)
		} else {
			fmt.Fprintf(&b, "block %d (offset %d) in %s (%s) does not match the hash recorded at commit", d.Block, d.Offset, d.File, d.Path)
		}
	}
	h := e.Hint
	if h == "" {
		h = "the file is damaged: use an older point that verifies, or resync the disk"
	}
	return b.String() + ": " + h
}

// VerifyReport is the outcome of a verify.
type VerifyReport struct {
	Seq     uint64        `json:"seq"`
	Blocks  int64         `json:"blocks"`
	Bytes   int64         `json:"bytes"`
	Damage  []Damage      `json:"damage"`
	Elapsed time.Duration `json:"-"`
}

// Verify rehashes every block of point seq and compares it with the hash
// recorded at its commit. With the newest point, a staged, uncommitted point
// that builds on it is checked too. The
// error is a *VerifyError naming each damaged file and block.
func (r *Replica) Verify(ctx context.Context, seq uint64) error {
	_, err := r.VerifyPoint(ctx, seq, nil)
	return err
}

// VerifyPoint is Verify with a report, and with source (when not nil) also
// compared block by block with the point: a differing block is reported with
// File "source".
func (r *Replica) VerifyPoint(ctx context.Context, seq uint64, source io.ReaderAt) (VerifyReport, error) {
	start := r.clock.Now()
	rep := VerifyReport{Seq: seq, Damage: []Damage{}}
	hashes, err := r.pointHashes(seq)
	if err != nil {
		return rep, fmt.Errorf("replica: verify point %d: %w", seq, err)
	}
	v, err := r.View(seq)
	if err != nil {
		return rep, fmt.Errorf("replica: verify point %d: %w", seq, err)
	}
	var mu sync.Mutex
	bad := func(d Damage) {
		mu.Lock()
		rep.Damage = append(rep.Damage, d)
		mu.Unlock()
	}
	var done atomic.Int64
	err = r.eachBlock(ctx, 3, func(blk int64, buf []byte) error {
		n := r.blockLen(blk)
		s, h, err := v.hashBlock(blk, buf)
		if err != nil {
			return err
		}
		if h != hashes[blk] {
			bad(Damage{Block: blk, Offset: blk * r.blockSize, File: s.name, Path: s.path})
		}
		if source != nil {
			if _, err := source.ReadAt(buf[:n], blk*r.blockSize); err != nil && !(errors.Is(err, io.EOF)) {
				return fmt.Errorf("read the source at %d: %w", blk*r.blockSize, err)
			}
			if blake3.Sum256(buf[:n]) != hashes[blk] {
				bad(Damage{Block: blk, Offset: blk * r.blockSize, File: "source"})
			}
		}
		r.report("verify", done.Add(n), r.size)
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("replica: verify point %d: %w", seq, err)
	}
	rep.Blocks, rep.Bytes = r.nblocks, r.size
	if seq == r.newest() {
		staged, err := r.verifyStaging()
		if err != nil {
			return rep, fmt.Errorf("replica: verify point %d: %w", seq, err)
		}
		rep.Damage = append(rep.Damage, staged...)
	}
	rep.Elapsed = r.clock.Since(start)
	if len(rep.Damage) > 0 {
		sortDamage(rep.Damage)
		return rep, &VerifyError{Op: "verify", Seq: seq, Damage: rep.Damage}
	}
	return rep, nil
}

func sortDamage(d []Damage) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j].Block < d[j-1].Block; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}

func (r *Replica) report(op string, done, total int64) {
	if r.progress != nil {
		r.progress(op, done, total)
	}
}

// hashBlock reads block blk of the view and hashes it. All-zero blocks are
// recognised without hashing.
func (v *View) hashBlock(blk int64, buf []byte) (blockSource, [32]byte, error) {
	r := v.r
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, err := v.resolve()
	if err != nil {
		return blockSource{}, [32]byte{}, err
	}
	s, err := v.readBlock(m, blk, buf)
	if err != nil {
		return s, [32]byte{}, fmt.Errorf("read block %d from %s: %w", blk, s.name, err)
	}
	n := r.blockLen(blk)
	if s.f == nil || isZero(buf[:n]) {
		return s, r.zeroHashOf(blk), nil
	}
	return s, blake3.Sum256(buf[:n]), nil
}

func (r *Replica) newest() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cat.newest()
}

// pointHashes loads the block hashes recorded when seq was committed.
func (r *Replica) pointHashes(seq uint64) ([][32]byte, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.cat.find(seq) < 0 {
		return nil, r.noPoint(seq)
	}
	if seq == r.cat.newest() {
		return r.hashes, nil
	}
	return readHashes(hashesPath(r.dir, seq), seq, r.size, r.blockSize)
}

// eachBlock runs fn on every block with workers goroutines, each with its
// own block buffer, and stops at the first error.
func (r *Replica) eachBlock(ctx context.Context, workers int, fn func(blk int64, buf []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := getAligned(int(r.blockSize))
			defer putAligned(buf)
			for {
				blk := next.Add(1) - 1
				if blk >= r.nblocks || ctx.Err() != nil {
					return
				}
				if err := fn(blk, buf.b); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// verifyStaging rehashes the staged, uncommitted point, if there is one.
func (r *Replica) verifyStaging() ([]Damage, error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	st := (*staging)(nil)
	if r.txn != nil {
		t := r.txn
		t.mu.Lock() // writers wait while the staging is read
		defer t.mu.Unlock()
		st = t.st
	} else {
		var err error
		if st, err = openStaging(r, false); err != nil {
			return nil, err
		}
		if st == nil {
			return nil, nil
		}
		defer st.close()
	}
	name, path := "staging", filepath.Join(st.dir, "data")
	if st.direct {
		name, path = "base (staging of point 1)", filepath.Join(r.dir, baseName)
	}
	var out []Damage
	buf := getAligned(int(r.blockSize))
	defer putAligned(buf)
	for _, blk := range st.sortedBlocks() {
		st.mu.Lock()
		sb := st.blocks[blk]
		st.mu.Unlock()
		if sb.hole {
			continue
		}
		n := r.blockLen(blk)
		if _, err := st.data.ReadAt(buf.b[:n], blk*r.blockSize); err != nil {
			return nil, fmt.Errorf("read staged block %d: %w", blk, err)
		}
		if blake3.Sum256(buf.b[:n]) != sb.hash {
			out = append(out, Damage{Block: blk, Offset: blk * r.blockSize, File: name, Path: path})
		}
	}
	return out, nil
}
