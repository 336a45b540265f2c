package replication

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/standby-dr/standby/internal/spec"
)

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// A tracked machine's reprotect compares only the blocks that tracking
// says may differ (what later points wrote, what the source wrote that no
// point holds, what the recovered machine wrote), and still leaves the
// source equal to the recovered disk; the first point after the failback
// ships it to the replica.
func TestTrackedReverse(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	dir := t.TempDir()
	const size, bs = 8 << 20, 64 << 10
	backing := filepath.Join(dir, "data.img")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	served := filepath.Join(dir, "served", "data.img")
	p := NewProtector(filepath.Join(dir, "replicas"), nil)
	defer func() { p.Close() }()
	m := Machine{Name: "vm1", BlockSize: bs, Capture: spec.CaptureTracked,
		Disks:  []SourceDisk{{Name: "data", Source: backing, Served: served}},
		Policy: spec.Policy{UploadThreadsPerVM: 2}}
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	fill := func(c byte) []byte { return bytes.Repeat([]byte{c}, 4096) }
	writeAt(t, served, 0, fill('0'))
	cut := func() VMPoint {
		t.Helper()
		res, err := p.Cut(ctx, "vm1", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Point
	}
	cut()
	writeAt(t, served, 1*bs, fill('A'))
	p2 := cut()
	writeAt(t, served, 2*bs, fill('B')) // only in a later point
	cut()
	writeAt(t, served, 3*bs, fill('C')) // in no point: the site went dark
	if err := p.Fence(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	// Fail over to the older point; the recovered machine writes.
	disks, err := p.Disks(ctx, "vm1", p2.Seq, filepath.Join(dir, "recovered", "job", "vm1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetRecovered("vm1", disks); err != nil {
		t.Fatal(err)
	}
	writeAt(t, disks["data"], 4*bs+100, fill('D'))
	st, err := p.Reverse(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(disks["data"])
	got, _ := os.ReadFile(backing)
	if !bytes.Equal(got, want) {
		t.Fatal("after reprotect the source differs from the recovered disk")
	}
	if st.InAll != size/bs || st.Blocks != 3 || st.Differ != 3 {
		t.Errorf("reverse %+v: want 3 of %d blocks compared (B, C, D), all 3 differing", st, size/bs)
	}
	// Failback: the machine runs at the source again, replication resumes
	// and its first point equals the disk.
	if err := p.Unfence(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	last := cut()
	check, err := p.Disks(ctx, "vm1", last.Seq, filepath.Join(dir, "check"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(check["data"]); !bytes.Equal(b, want) {
		t.Error("the first point after the failback differs from the disk")
	}
	if err := p.Release(ctx, filepath.Join(dir, "check")); err != nil {
		t.Fatal(err)
	}
}
