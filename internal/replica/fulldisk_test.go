package replica

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFullDisk fills a small tmpfs under the replica: the point being applied
// fails with a clear error and the previous point stays intact.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to mount a small tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		skipOrFail(t, "cannot mount a tmpfs: "+strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	const bs, size = 64 << 10, 3 << 20
	ctx := context.Background()
	dir := filepath.Join(mnt, "replica")
	r, err := Create(dir, size, Options{BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(size, bs)
	rng := rand.New(rand.NewPCG(9, 9))
	apply(t, r, m, m.randomChanges(rng, 1), PointMeta{})
	// Take most of what is left, so the next point cannot fit.
	filler := make([]byte, 3<<20)
	if err := os.WriteFile(filepath.Join(mnt, "filler"), filler, 0o644); err != nil {
		t.Fatal(err)
	}

	all := make([]change, 0, size/bs)
	for off := int64(0); off < size; off += bs {
		c := change{off: off, n: bs, data: make([]byte, bs)}
		fillRandom(rng, c.data)
		all = append(all, c)
	}
	txn, err := r.Begin(ctx)
	if err == nil {
		err = writeChanges(ctx, txn, all, 2)
		if err == nil {
			_, err = txn.Commit(ctx, PointMeta{})
		}
	}
	if err == nil {
		t.Fatal("a point larger than the free space was applied")
	}
	if !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "filesystem is full: free space there") {
		t.Fatalf("unclear error: %v", err)
	}
	t.Logf("error: %v", err)
	if got := r.Points(); len(got) != 1 {
		t.Fatalf("points %v, want only point 1", got)
	}
	checkAll(t, r, m)
	r.Close()
	r, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkAll(t, r, m)

	// With space again, the staged point is dropped and a new one applies.
	os.Remove(filepath.Join(mnt, "filler"))
	if txn, err = r.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := txn.Abort(); err != nil {
		t.Fatal(err)
	}
	apply(t, r, m, all[:len(all)/2], PointMeta{})
	checkAll(t, r, m)

	// Staged, then the disk fills before the undo is written: the commit
	// fails, nothing is applied, and once there is space it goes through.
	next := all[len(all)/2:]
	if txn, err = r.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := writeChanges(ctx, txn, next, 2); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "filler"), make([]byte, 3<<20), 0o644); err != nil && !strings.Contains(err.Error(), "no space") {
		t.Fatal(err)
	}
	_, err = txn.Commit(ctx, PointMeta{})
	if err == nil || !strings.Contains(err.Error(), "filesystem is full: free space there") {
		t.Fatalf("commit on a full disk: %v", err)
	}
	t.Logf("error: %v", err)
	if got := r.Points(); len(got) != 2 {
		t.Fatalf("points %v, want 2", got)
	}
	checkAll(t, r, m)
	os.Remove(filepath.Join(mnt, "filler"))
	p, err := txn.Commit(ctx, PointMeta{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range next {
		copy(m.cur[c.off:], c.data)
	}
	m.points[p.Seq] = append([]byte(nil), m.cur...)
	checkAll(t, r, m)
}
