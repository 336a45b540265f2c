package replication

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeRandom(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestProtectorCutPinFenceReverse(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src", "data.img")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 8<<20); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, src, 0, 1<<20)
	p := NewProtector(filepath.Join(dir, "replicas"), nil)
	defer p.Close()
	m := Machine{Name: "vm1", Disks: []SourceDisk{{Name: "data", Source: src}}, Threads: 2, BlockSize: 1 << 20}
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	first, err := p.Cut(ctx, "vm1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	want1, _ := os.ReadFile(src)
	writeRandom(t, src, 3<<20, 4096)
	second, err := p.Cut(ctx, "vm1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.Point.Seq != 2 || second.BytesShipped > 1<<20 {
		t.Errorf("second point %+v: want seq 2 and at most one block shipped", second)
	}
	if err := p.Pin(ctx, "vm1", first.Point.Seq, "job1"); err != nil {
		t.Fatal(err)
	}
	disks, err := p.Disks(ctx, "vm1", first.Point.Seq, filepath.Join(dir, "rec"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(disks["data"])
	if !bytes.Equal(got, want1) {
		t.Fatal("the disk at point 1 differs from the source at point 1")
	}
	// A new process takes over from the directory alone.
	p.Close()
	p = NewProtector(filepath.Join(dir, "replicas"), nil)
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	if pts, _ := p.Points(ctx, "vm1"); len(pts) != 2 {
		t.Fatalf("points after reopen: %+v", pts)
	}
	if err := p.Fence(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Cut(ctx, "vm1", "", nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("a fenced VM cut a point: %v", err)
	}
	// Reprotect: the recovered disk changed a little; only that goes back.
	if err := p.SetRecovered("vm1", disks); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, disks["data"], 5<<20, 100)
	st, err := p.Reverse(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(disks["data"])
	b, _ := os.ReadFile(src)
	if !bytes.Equal(a, b) {
		t.Fatal("after reverse the source disk differs from the recovered one")
	}
	// Point 1 lacks the 4 KiB written for point 2 and has the 100 bytes: two blocks differ.
	if st.Differ != 2 || st.BytesSent != 2<<20 {
		t.Errorf("reverse sent %+v, want exactly the 2 differing blocks", st)
	}
	if err := p.Unfence(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	third, err := p.Cut(ctx, "vm1", "", nil)
	if err != nil || third.Point.Seq != 3 {
		t.Fatalf("after unfence: %+v %v", third, err)
	}
}
