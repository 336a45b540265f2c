package replica

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		size, bs int64
	}{
		{"64KiB blocks, short last block", 40*64<<10 + 12345, 64 << 10},
		{"4KiB blocks", 300 * 4096, 4096},
		{"1MiB blocks", 9<<20 + 4096, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			r, dir := newReplica(t, tc.size, tc.bs, clk)
			m := newModel(tc.size, tc.bs)
			rng := rand.New(rand.NewPCG(1, uint64(tc.bs)))
			for i := 0; i < 6; i++ {
				frac := 0.2
				if i == 0 {
					frac = 0.8
				}
				clk.Advance(time.Minute)
				kind := KindCrash
				if i%2 == 1 {
					kind = KindApp
				}
				p := apply(t, r, m, m.randomChanges(rng, frac), PointMeta{Kind: kind})
				if p.Seq != uint64(i+1) || !p.Time.Equal(clk.Now()) || p.Kind != kind {
					t.Fatalf("point %+v", p)
				}
			}
			checkAll(t, r, m)
			// Reopened, the same.
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			r2, err := Open(dir, Options{Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close()
			if got := len(r2.Points()); got != 6 {
				t.Fatalf("%d points after reopen, want 6", got)
			}
			checkAll(t, r2, m)
		})
	}
}

func TestExportIsSparse(t *testing.T) {
	const bs = 64 << 10
	r, _ := newReplica(t, 64*bs, bs, nil)
	m := newModel(64*bs, bs)
	data := bytes.Repeat([]byte{7}, bs)
	apply(t, r, m, []change{{off: 3 * bs, n: bs, data: data}, {off: 5 * bs, n: bs, data: make([]byte, bs)}}, PointMeta{})
	out := filepath.Join(t.TempDir(), "out.img")
	st, err := r.Export(context.Background(), 1, out)
	if err != nil {
		t.Fatal(err)
	}
	if st.DataBytes != bs {
		t.Fatalf("wrote %d data bytes, want %d", st.DataBytes, bs)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 4*bs {
		t.Fatalf("export uses %d bytes on disk for %d bytes of data: not sparse", used, bs)
	}
	checkAll(t, r, m)
}

func TestResumeStagedPoint(t *testing.T) {
	const bs, size = 64 << 10, 32 * 64 << 10
	ctx := context.Background()
	for _, first := range []bool{true, false} {
		r, dir := newReplica(t, size, bs, nil)
		m := newModel(size, bs)
		rng := rand.New(rand.NewPCG(2, 2))
		if !first {
			apply(t, r, m, m.randomChanges(rng, 0.5), PointMeta{})
		}
		changes := m.randomChanges(rng, 0.6)
		txn, err := r.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		half := changes[:len(changes)/2]
		if err := writeChanges(ctx, txn, half, 2); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := txn.WriteHole(ctx, 0, bs); !errors.Is(err, ErrTxnDone) {
			t.Fatalf("write after close: %v, want ErrTxnDone", err)
		}
		r, err = Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Points()) != len(m.points) {
			t.Fatalf("a staged point is listed: %v", r.Points())
		}
		txn, err = r.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		staged := map[int64]bool{}
		for _, e := range txn.Staged() {
			for off := e.Off; off < e.Off+e.Len; off += bs {
				staged[off] = true
			}
		}
		var rest []change
		for _, c := range changes {
			if !staged[c.off] {
				rest = append(rest, c)
			}
		}
		if len(rest) != len(changes)-len(half) {
			t.Fatalf("resume: %d extents to send, want %d", len(rest), len(changes)-len(half))
		}
		if err := writeChanges(ctx, txn, rest, 2); err != nil {
			t.Fatal(err)
		}
		if _, err := txn.Commit(ctx, PointMeta{}); err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			if c.data == nil {
				clear(m.cur[c.off : c.off+c.n])
			} else {
				copy(m.cur[c.off:], c.data)
			}
		}
		m.points[txn.Seq()] = bytes.Clone(m.cur)
		checkAll(t, r, m)
		r.Close()
	}
}

func TestAbort(t *testing.T) {
	const bs, size = 64 << 10, 16 * 64 << 10
	ctx := context.Background()
	r, _ := newReplica(t, size, bs, nil)
	m := newModel(size, bs)
	rng := rand.New(rand.NewPCG(3, 3))
	// An aborted first point leaves an empty replica.
	txn, _ := r.Begin(ctx)
	if err := writeChanges(ctx, txn, m.randomChanges(rng, 1), 2); err != nil {
		t.Fatal(err)
	}
	if err := txn.Abort(); err != nil {
		t.Fatal(err)
	}
	apply(t, r, m, m.randomChanges(rng, 0.3), PointMeta{})
	txn, _ = r.Begin(ctx)
	if err := writeChanges(ctx, txn, m.randomChanges(rng, 1), 2); err != nil {
		t.Fatal(err)
	}
	if err := txn.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(ctx, PointMeta{}); !errors.Is(err, ErrTxnDone) {
		t.Fatalf("commit after abort: %v", err)
	}
	apply(t, r, m, m.randomChanges(rng, 0.3), PointMeta{})
	checkAll(t, r, m)
}

func TestWriteExtentChecks(t *testing.T) {
	const bs = 64 << 10
	r, _ := newReplica(t, 10*bs+100, bs, nil)
	ctx := context.Background()
	txn, _ := r.Begin(ctx)
	data := make([]byte, bs)
	for _, tc := range []struct {
		off  int64
		data []byte
		hash [32]byte
		want string
	}{
		{0, data, [32]byte{1}, "BLAKE3 mismatch"},
		{1, data, blake3.Sum256(data), "not aligned"},
		{0, data[:100], blake3.Sum256(data[:100]), "whole number"},
		{10 * bs, data, blake3.Sum256(data), "outside the disk"},
		{10 * bs, data[:100], blake3.Sum256(data[:100]), ""}, // the short last block
	} {
		err := txn.WriteExtent(ctx, tc.off, tc.data, tc.hash)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("WriteExtent(%d, %d bytes) = %v, want %q", tc.off, len(tc.data), err, tc.want)
		}
	}
}

func TestCommitChecksSourceHashes(t *testing.T) {
	const bs = 64 << 10
	r, _ := newReplica(t, 8*bs, bs, nil)
	m := newModel(8*bs, bs)
	rng := rand.New(rand.NewPCG(4, 4))
	changes := m.randomChanges(rng, 1)
	ctx := context.Background()
	txn, _ := r.Begin(ctx)
	if err := writeChanges(ctx, txn, changes, 2); err != nil {
		t.Fatal(err)
	}
	wrong := make([][32]byte, 8)
	if _, err := txn.Commit(ctx, PointMeta{BlockHashes: wrong}); err == nil || !strings.Contains(err.Error(), "differs from the source") {
		t.Fatalf("commit with wrong source hashes: %v", err)
	}
	for _, c := range changes {
		if c.data != nil {
			copy(m.cur[c.off:], c.data)
		}
	}
	right := make([][32]byte, 8)
	for i := range right {
		right[i] = blake3.Sum256(m.cur[int64(i)*bs : int64(i+1)*bs])
	}
	p, err := txn.Commit(ctx, PointMeta{BlockHashes: right})
	if err != nil {
		t.Fatal(err)
	}
	m.points[p.Seq] = bytes.Clone(m.cur)
	checkAll(t, r, m)
}

func TestViewDuringLaterCommits(t *testing.T) {
	const bs, size = 64 << 10, 24 * 64 << 10
	r, _ := newReplica(t, size, bs, nil)
	m := newModel(size, bs)
	rng := rand.New(rand.NewPCG(5, 5))
	apply(t, r, m, m.randomChanges(rng, 1), PointMeta{})
	v, err := r.View(1)
	if err != nil {
		t.Fatal(err)
	}
	o, err := v.Overlay(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for i := 0; i < 3; i++ {
		apply(t, r, m, m.randomChanges(rng, 0.5), PointMeta{})
		got := make([]byte, size)
		if _, err := v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, m.points[1]) {
			t.Fatalf("view of point 1 changed after point %d was applied", i+2)
		}
	}
	// The overlay reads the point, keeps its own writes, and leaves the replica alone.
	want := bytes.Clone(m.points[1])
	for _, w := range []struct{ off, n int64 }{{100, 10}, {4096, 4096}, {bs - 3, 7000}, {size - 5, 5}} {
		p := make([]byte, w.n)
		fillRandom(rng, p)
		if _, err := o.WriteAt(p, w.off); err != nil {
			t.Fatal(err)
		}
		copy(want[w.off:], p)
	}
	got := make([]byte, size)
	if _, err := o.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("overlay content differs at %d", firstDiff(got, want))
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o2, err := v.Overlay(o.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o2.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reopened overlay differs (%v)", err)
	}
	o2.Close()
	checkAll(t, r, m)
}

func TestOpenErrors(t *testing.T) {
	const bs = 64 << 10
	r, dir := newReplica(t, 8*bs, bs, nil)
	m := newModel(8*bs, bs)
	apply(t, r, m, m.randomChanges(rand.New(rand.NewPCG(6, 6)), 1), PointMeta{})
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use by another standby process") {
		t.Fatalf("second open: %v", err)
	}
	r.Close()
	cat, err := os.ReadFile(filepath.Join(dir, catalogName))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		catalog []byte
		want    string
	}{
		{"truncated", cat[:len(cat)/2], "catalog.json is truncated or damaged"},
		{"empty", nil, "catalog.json is truncated or damaged"},
		{"newer", bytes.Replace(cat, []byte(`"format": 1`), []byte(`"format": 2`), 1), "format version 2, newer than this standby reads (1): upgrade standby"},
		{"no version", bytes.Replace(cat, []byte(`"format": 1,`), nil, 1), "no format version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, catalogName), tc.catalog, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Open(t.TempDir(), Options{}); err == nil || !strings.Contains(err.Error(), "not a replica directory") {
		t.Fatalf("Open of an empty directory: %v", err)
	}
}

// A write into the base that was never acknowledged (the process stopped
// before its record was appended) must not survive into the first point.
func TestFirstPointIgnoresUnacknowledgedWrites(t *testing.T) {
	const bs, size = 64 << 10, 8 * 64 << 10
	ctx := context.Background()
	r, dir := newReplica(t, size, bs, nil)
	m := newModel(size, bs)
	data := bytes.Repeat([]byte{9}, bs)
	txn, _ := r.Begin(ctx)
	if err := txn.WriteExtent(ctx, 0, data, blake3.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	f, _ := os.OpenFile(filepath.Join(dir, baseName), os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{1}, bs), 3*bs) // in flight, never recorded
	f.Close()
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if txn, err = r.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := txn.Commit(ctx, PointMeta{})
	if err != nil {
		t.Fatal(err)
	}
	copy(m.cur, data)
	m.points[p.Seq] = bytes.Clone(m.cur)
	checkAll(t, r, m)
}
