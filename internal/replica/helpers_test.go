package replica

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
)

var t0 = time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)

// model is the expected content of a replica: the disk as each point left it.
type model struct {
	size, bs int64
	cur      []byte
	points   map[uint64][]byte
}

func newModel(size, bs int64) *model {
	return &model{size: size, bs: bs, cur: make([]byte, size), points: map[uint64][]byte{}}
}

// change is one extent of a point: data, or a hole when data is nil.
type change struct {
	off, n int64
	data   []byte
}

// randomChanges picks about frac of the blocks and rewrites them: random
// data, zero data, holes, single blocks and runs of blocks.
func (m *model) randomChanges(rng *rand.Rand, frac float64) []change {
	nblocks := (m.size + m.bs - 1) / m.bs
	var out []change
	for blk := int64(0); blk < nblocks; blk++ {
		if rng.Float64() >= frac {
			continue
		}
		run := int64(1)
		if rng.IntN(4) == 0 {
			run = min(1+int64(rng.IntN(3)), nblocks-blk)
		}
		off := blk * m.bs
		n := min(run*m.bs, m.size-off)
		c := change{off: off, n: n}
		switch rng.IntN(6) {
		case 0: // a hole
		case 1: // zero data sent as data
			c.data = make([]byte, n)
		default:
			c.data = make([]byte, n)
			fillRandom(rng, c.data)
			if rng.IntN(3) == 0 { // half zero: a sparse-friendly block
				clear(c.data[:n/2])
			}
		}
		out = append(out, c)
		blk += run - 1
	}
	return out
}

func fillRandom(rng *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			p[i+k] = byte(v >> (8 * k))
		}
	}
	for i := len(p) &^ 7; i < len(p); i++ {
		p[i] = byte(rng.Uint32())
	}
}

// apply stages changes from several goroutines and commits them.
func apply(t testing.TB, r *Replica, m *model, changes []change, meta PointMeta) Point {
	t.Helper()
	ctx := context.Background()
	txn, err := r.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeChanges(ctx, txn, changes, 4); err != nil {
		t.Fatal(err)
	}
	p, err := txn.Commit(ctx, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.data == nil {
			clear(m.cur[c.off : c.off+c.n])
		} else {
			copy(m.cur[c.off:], c.data)
		}
	}
	m.points[p.Seq] = bytes.Clone(m.cur)
	return p
}

func writeChanges(ctx context.Context, txn *Txn, changes []change, workers int) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(changes))
	next := make(chan change)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				var err error
				if c.data == nil {
					err = txn.WriteHole(ctx, c.off, c.n)
				} else {
					err = txn.WriteExtent(ctx, c.off, c.data, blake3.Sum256(c.data))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, c := range changes {
		next <- c
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// checkAll reads, verifies and exports every listed point and compares each
// with the model.
func checkAll(t testing.TB, r *Replica, m *model) {
	t.Helper()
	ctx := context.Background()
	for _, p := range r.Points() {
		want, ok := m.points[p.Seq]
		if !ok {
			t.Fatalf("point %d is listed but was never committed", p.Seq)
		}
		v, err := r.View(p.Seq)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, r.Size())
		if _, err := v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("view of point %d: content differs at %d", p.Seq, firstDiff(got, want))
		}
		if err := r.Verify(ctx, p.Seq); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), fmt.Sprintf("p%d.img", p.Seq))
		st, err := r.Export(ctx, p.Seq, out)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if blake3.Sum256(b) != blake3.Sum256(want) {
			t.Fatalf("export of point %d: content differs at %d", p.Seq, firstDiff(b, want))
		}
		if st.Bytes != r.Size() {
			t.Fatalf("export of point %d: %d bytes, want %d", p.Seq, st.Bytes, r.Size())
		}
		os.Remove(out)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func newReplica(t testing.TB, size, bs int64, clk clock.Clock) (*Replica, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "replica")
	r, err := Create(dir, size, Options{BlockSize: bs, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir
}
