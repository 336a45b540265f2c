package replica

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// flip inverts one byte of a file.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// wantDamage checks that err is a VerifyError naming file and block.
func wantDamage(t *testing.T, err error, file string, blk int64) {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a VerifyError naming %s block %d", err, file, blk)
	}
	for _, d := range ve.Damage {
		if d.File == file && d.Block == blk {
			if !strings.Contains(err.Error(), file) {
				t.Fatalf("message does not name %s: %v", file, err)
			}
			return
		}
	}
	t.Fatalf("got %v, want damage in %s block %d", err, file, blk)
}

func TestVerifyFindsDamage(t *testing.T) {
	const bs, size = 64 << 10, 16 * 64 << 10
	ctx := context.Background()
	r, dir := newReplica(t, size, bs, nil)
	m := newModel(size, bs)
	data := func(b byte) []byte {
		p := make([]byte, bs)
		for i := range p {
			p[i] = b + byte(i)
		}
		return p
	}
	apply(t, r, m, []change{{off: 0, n: bs, data: data(1)}, {off: 2 * bs, n: bs, data: data(2)}}, PointMeta{})
	apply(t, r, m, []change{{off: 2 * bs, n: bs, data: data(3)}, {off: 5 * bs, n: bs, data: data(4)}}, PointMeta{})
	apply(t, r, m, []change{{off: 5 * bs, n: bs, data: data(5)}}, PointMeta{})
	checkAll(t, r, m)

	t.Run("base", func(t *testing.T) {
		path := filepath.Join(dir, baseName)
		flip(t, path, 5*bs+77)
		defer flip(t, path, 5*bs+77)
		wantDamage(t, r.Verify(ctx, 3), "base", 5)
		out := filepath.Join(t.TempDir(), "out.img")
		_, err := r.Export(ctx, 3, out)
		wantDamage(t, err, "base", 5)
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused export left %s behind", out)
		}
		// Point 1 reads block 5 from undo 2, and is fine.
		if err := r.Verify(ctx, 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("undo", func(t *testing.T) {
		path := undoDataPath(dir, 1)
		flip(t, path, 2*bs+5)
		defer flip(t, path, 2*bs+5)
		wantDamage(t, r.Verify(ctx, 1), "undo 1", 2)
		_, err := r.Export(ctx, 1, filepath.Join(t.TempDir(), "out.img"))
		wantDamage(t, err, "undo 1", 2)
		if err := r.Verify(ctx, 2); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("hashes file", func(t *testing.T) {
		path := hashesPath(dir, 1)
		flip(t, path, 60)
		defer flip(t, path, 60)
		if err := r.Verify(ctx, 1); err == nil || !strings.Contains(err.Error(), "1.hashes is damaged") {
			t.Fatalf("verify with a damaged hashes file: %v", err)
		}
	})
	t.Run("staging", func(t *testing.T) {
		txn, err := r.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeChanges(ctx, txn, []change{{off: 7 * bs, n: bs, data: data(6)}, {off: 9 * bs, n: bs, data: data(7)}}, 1); err != nil {
			t.Fatal(err)
		}
		flip(t, filepath.Join(dir, stagingDir, "data"), 9*bs+1)
		wantDamage(t, r.Verify(ctx, 3), "staging", 9)
		if _, err := txn.Commit(ctx, PointMeta{}); err == nil {
			t.Fatal("commit of damaged staging succeeded")
		} else {
			wantDamage(t, err, "staging", 9)
		}
		// Nothing was applied; closed and reopened, the staging is still named.
		for _, seq := range []uint64{1, 2} {
			if err := r.Verify(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
		r.Close()
		r2, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		wantDamage(t, r2.Verify(ctx, 3), "staging", 9)
		txn, err = r2.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Abort(); err != nil {
			t.Fatal(err)
		}
		checkAll(t, r2, m)
	})
}

func TestDamagedUndoIndex(t *testing.T) {
	const bs = 64 << 10
	r, dir := newReplica(t, 8*bs, bs, nil)
	m := newModel(8*bs, bs)
	rng := rand.New(rand.NewPCG(7, 7))
	apply(t, r, m, m.randomChanges(rng, 1), PointMeta{})
	apply(t, r, m, m.randomChanges(rng, 1), PointMeta{})
	r.Close()
	flip(t, undoIndexPath(dir, 1, 1), 40)
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "undo/1-1.index is damaged") {
		t.Fatalf("open with a damaged undo index: %v", err)
	}
}
