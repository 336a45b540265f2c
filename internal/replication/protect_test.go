package replication

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
	for _, mode := range []DiskMode{DisksServed, DisksExported} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == DisksServed {
				needFUSE(t)
			}
			testProtector(t, mode)
		})
	}
}

func testProtector(t *testing.T, mode DiskMode) {
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
	p.SetDiskMode(mode)
	defer func() { p.Close() }()
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
	p.SetDiskMode(mode)
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

// TestServedOverlays boots nothing but does what a recovered machine's
// disks go through: served at once on a pinned point, written apart from
// the replica while replication goes on, served again by a new process with
// the synced writes kept, and released without a trace.
func TestServedOverlays(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "data.img")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 4<<20); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, src, 0, 64<<10)
	want1, _ := os.ReadFile(src)
	p := NewProtector(filepath.Join(dir, "replicas"), nil)
	defer func() { p.Close() }()
	m := Machine{Name: "vm1", Disks: []SourceDisk{{Name: "data", Source: src}}, BlockSize: 64 << 10}
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	first, err := p.Cut(ctx, "vm1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	job := filepath.Join(dir, "recovered", "job1")
	disks, err := p.Disks(ctx, "vm1", first.Point.Seq, filepath.Join(job, "vm1"))
	if err != nil {
		t.Fatal(err)
	}
	path := disks["data"]
	if target, err := os.Readlink(path); err != nil || !strings.Contains(target, ".standby-mnt-") {
		t.Fatalf("the disk %s is not served (link %q, %v)", path, target, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want1) {
		t.Fatal("the served disk differs from the point")
	}
	// The machine writes; the source moves on and is replicated meanwhile.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine := bytes.Repeat([]byte("recovered"), 1000)
	if _, err := f.WriteAt(mine, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writeRandom(t, src, 2<<20, 4096)
	if _, err := p.Cut(ctx, "vm1", "", nil); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(want1)
	copy(want[1<<20:], mine)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Fatal("the served disk lost its own write, or took the source's new one")
	}
	v, err := p.vms["vm1"].replicas["data"].View(first.Point.Disks["data"])
	if err != nil {
		t.Fatal(err)
	}
	pointNow := make([]byte, len(want1))
	if _, err := v.ReadAt(pointNow, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pointNow, want1) {
		t.Fatal("the machine's write reached the replica's point")
	}
	// A new process serves it again, with the synced write.
	p.Close()
	p = NewProtector(filepath.Join(dir, "replicas"), nil)
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	if r := p.TakeReserved(); len(r) != 1 || r[0].Path != path {
		t.Fatalf("served again: %+v, want %s", r, path)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Fatal("served again, the disk lost its synced write")
	}
	if pins := p.vms["vm1"].st.Pins; len(pins) != 1 {
		t.Fatalf("pins while served: %v, want the disks' one", pins)
	}
	if err := p.Release(ctx, job); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after release %s is still there: %v", path, err)
	}
	left, _ := filepath.Glob(filepath.Join(job, "vm1", "*"))
	if len(left) > 0 {
		t.Errorf("after release: %v left", left)
	}
	if pins := p.vms["vm1"].st.Pins; len(pins) != 0 {
		t.Errorf("after release pins are left: %v", pins)
	}
	if b, _ := os.ReadFile("/proc/self/mounts"); bytes.Contains(b, []byte(job)) {
		t.Errorf("after release a mount is left under %s", job)
	}
}
