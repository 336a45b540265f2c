package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/spec"
)

// needFUSE skips outside CI when FUSE (and the tools named) are missing;
// with STANDBY_TEST_REQUIRE_ALL=1 the skip is a failure.
func needFUSE(t *testing.T, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "FUSE mounts need root here"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = "needs " + tool
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("STANDBY_TEST_REQUIRE_ALL") == "1" {
		t.Fatal(why + " (STANDBY_TEST_REQUIRE_ALL=1)")
	}
	t.Skip(why)
}

// served is a tracked disk served through FUSE with its local replica.
type served struct {
	name, backing, path string
	tr                  *capture.Tracked
	m                   *capture.Mount
	r                   *replica.Replica
}

// runServed serves one FUSE disk per name, VMs[i] naming the disks of VM
// i, all in one consistency group cut every `every`, and runs the loop. The
// returned stop ends the loop, unmounts and shuts tracking down.
func runServed(t *testing.T, size int64, every time.Duration, vms ...[]string) (map[string]*served, *Group, func()) {
	t.Helper()
	dir := t.TempDir()
	clk := clock.Real{}
	disks := map[string]*served{}
	var gvms []VM
	pol := spec.Policy{CrashConsistentFrequency: spec.Duration{Duration: every}, UploadThreadsPerVM: 4,
		RPOThreshold: spec.Duration{Duration: time.Minute}}
	var mounts []*capture.Mount
	unmount := func() {
		for _, m := range mounts {
			if err := m.Close(); err != nil {
				t.Error(err)
			}
		}
		mounts = nil
	}
	for i, names := range vms {
		vm := VM{Name: fmt.Sprintf("vm%d", i+1), Policy: pol}
		for _, name := range names {
			s := &served{name: name, backing: filepath.Join(dir, name+".img"), path: filepath.Join(dir, name)}
			if err := os.WriteFile(s.backing, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(s.backing, size); err != nil {
				t.Fatal(err)
			}
			var err error
			if s.r, err = replica.Create(filepath.Join(dir, name+".replica"), size, replica.Options{BlockSize: 64 << 10, Clock: clk}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.r.Close() })
			if s.tr, err = capture.OpenTracked(s.backing, capture.TrackedOptions{Target: name, Clock: clk}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.tr.Close() })
			if s.m, err = capture.Serve(s.path, s.tr); err != nil {
				unmount()
				t.Fatal(err)
			}
			mounts = append(mounts, s.m)
			disks[name] = s
			vm.Disks = append(vm.Disks, Disk{Name: name, Tracked: s.tr, Target: Local(s.r), Pruner: s.r})
		}
		gvms = append(gvms, vm)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := NewGroup(ctx, GroupOptions{Name: "test", VMs: gvms, Clock: clk})
	if err != nil {
		unmount()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		unmount()
		if err := g.ShutdownTracking(); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	return disks, g, stop
}

// alignedBuf is a page-aligned buffer, so a write of up to 1 MiB reaches
// the FUSE server as one request.
func alignedBuf(t *testing.T, n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(b) })
	return b
}

// A logged write: every 4 KiB sector it writes starts with the write's id
// and the sector's offset, so the writes a point holds can be read off it.
type loggedWrite struct {
	id         uint64
	off, n     int64
	start, end time.Time
}

func fillWrite(p []byte, id uint64, off int64) {
	for s := 0; s < len(p); s += 4096 {
		sec := p[s : s+4096]
		binary.LittleEndian.PutUint64(sec, id)
		binary.LittleEndian.PutUint64(sec[8:], uint64(off)+uint64(s))
		r := rand.New(rand.NewPCG(id, uint64(off)+uint64(s)))
		for i := 16; i < len(sec); i += 8 {
			binary.LittleEndian.PutUint64(sec[i:], r.Uint64())
		}
	}
}

// maxWriteID is the newest write whose sectors the image holds.
func maxWriteID(img []byte) uint64 {
	var k uint64
	for s := 0; s+4096 <= len(img); s += 4096 {
		id := binary.LittleEndian.Uint64(img[s:])
		if id > k && binary.LittleEndian.Uint64(img[s+8:]) == uint64(s) {
			k = id
		}
	}
	return k
}

func exportPoint(t *testing.T, r *replica.Replica, seq uint64) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), fmt.Sprintf("point-%d.img", seq))
	if _, err := r.Export(context.Background(), seq, out); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	return img
}

// TestWriterPoints: a writer does random writes of 4 KiB to 1 MiB at a
// steady rate while points are cut every second. Each point, exported,
// equals the writer's own record of its writes up to the cut: no write
// that ended before the cut is missing, none that began after it is there.
func TestWriterPoints(t *testing.T) {
	needFUSE(t)
	const size = 32 << 20
	disks, g, stop := runServed(t, size, time.Second, []string{"disk0"})
	d := disks["disk0"]
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuf(t, 1<<20)
	rng := rand.New(rand.NewPCG(7, 7))
	clk := clock.Real{}
	var log []loggedWrite
	end := clk.Now().Add(6 * time.Second)
	for id := uint64(1); clk.Now().Before(end); id++ {
		n := int64(1+rng.IntN(256)) * 4096
		off := rng.Int64N((size-n)/4096+1) * 4096
		p := buf[:n]
		fillWrite(p, id, off)
		w := loggedWrite{id: id, off: off, n: n, start: clk.Now()}
		if _, err := f.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		w.end = clk.Now()
		log = append(log, w)
		time.Sleep(20 * time.Millisecond) // about 10 MB/s
	}
	f.Close()
	time.Sleep(1500 * time.Millisecond) // a last point holding everything
	stop()
	st := g.Status()
	t.Logf("%d writes, %d points, barrier pause p50 %.3f ms p99 %.3f ms, copied aside %d bytes",
		len(log), st.Points, st.BarrierMs.P50, st.BarrierMs.P99, st.BytesCopiedAside)
	pts := d.r.Points()
	if len(pts) < 5 {
		t.Fatalf("%d points in 7 s of cuts every second", len(pts))
	}
	model := make([]byte, size)
	applied := uint64(0)
	for _, p := range pts {
		img := exportPoint(t, d.r, p.Seq)
		k := maxWriteID(img)
		if k < applied {
			t.Fatalf("point %d holds writes up to %d, an older point up to %d", p.Seq, k, applied)
		}
		for ; applied < k; applied++ {
			w := log[applied]
			fillWrite(model[w.off:w.off+w.n], w.id, w.off)
		}
		if !bytes.Equal(img, model) {
			i := 0
			for i < len(img) && img[i] == model[i] {
				i++
			}
			t.Fatalf("point %d differs at offset %d from the writer's record up to write %d", p.Seq, i, k)
		}
		cut := p.Time
		for _, w := range log {
			if w.id > k && w.end.Round(0).Before(cut) {
				t.Fatalf("point %d (cut %s): write %d ended at %s, before the cut, and is missing", p.Seq, cut.Format(time.StampMicro), w.id, w.end.Format(time.StampMicro))
			}
			if w.id <= k && w.start.Round(0).After(cut) {
				t.Fatalf("point %d (cut %s): write %d began at %s, after the cut, and is in it", p.Seq, cut.Format(time.StampMicro), w.id, w.start.Format(time.StampMicro))
			}
		}
	}
	if applied != uint64(len(log)) {
		t.Fatalf("the last point holds writes up to %d of %d", applied, len(log))
	}
	if st.BarrierMs.P99 > 5 {
		t.Errorf("barrier pause p99 %.2f ms, goal under 5 ms", st.BarrierMs.P99)
	}
}

// TestConsistencyGroup: two disks of one VM and a disk of a second VM in
// one consistency group. The writer writes each record to disk a, then b,
// then c; every group point is one instant: each disk holds exactly a
// prefix of its records, and a later disk is never ahead of an earlier one
// nor more than one record behind it.
func TestConsistencyGroup(t *testing.T) {
	needFUSE(t)
	const size, slots = 16 << 20, 4096
	disks, _, stop := runServed(t, size, 300*time.Millisecond, []string{"a", "b"}, []string{"c"})
	order := []string{"a", "b", "c"}
	files := make([]*os.File, len(order))
	for i, name := range order {
		f, err := os.OpenFile(disks[name].path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Close before the serving stops, even on a failure: a mount
		// whose file this process holds open would wait for it forever.
		t.Cleanup(func() { f.Close() })
		files[i] = f
	}
	rec := alignedBuf(t, 4096)
	clk := clock.Real{}
	end := clk.Now().Add(4 * time.Second)
	var n uint64
	for id := uint64(1); clk.Now().Before(end); id++ {
		off := int64(id%slots) * 4096
		binary.LittleEndian.PutUint64(rec, id)
		binary.LittleEndian.PutUint64(rec[8:], uint64(off))
		for i, f := range files {
			if _, err := f.WriteAt(rec, off); err != nil {
				t.Fatalf("write %d to disk %s at %d: %v", id, order[i], off, err)
			}
		}
		n = id
	}
	for _, f := range files {
		f.Close()
	}
	time.Sleep(700 * time.Millisecond)
	stop()
	// Group points: the cut times every replica holds.
	times := map[time.Time]map[string]uint64{}
	for _, name := range order {
		for _, p := range disks[name].r.Points() {
			if times[p.Time] == nil {
				times[p.Time] = map[string]uint64{}
			}
			times[p.Time][name] = p.Seq
		}
	}
	checked := 0
	var newest uint64
	for at, seqs := range times {
		if len(seqs) != len(order) {
			t.Errorf("the cut at %s is a point on %d of %d disks", at, len(seqs), len(order))
			continue
		}
		var ks []uint64
		for _, name := range order {
			img := exportPoint(t, disks[name].r, seqs[name])
			k := maxWriteID(img)
			// Exactly the prefix up to k: each slot holds its newest id <= k.
			for s := 0; s < slots; s++ {
				var want uint64 // the newest id <= k written to slot s
				if k >= uint64(s) {
					want = k - (k-uint64(s))%slots
				}
				got := binary.LittleEndian.Uint64(img[s*4096:])
				if got != want {
					t.Fatalf("disk %s point %d: slot %d holds record %d, want %d (prefix up to %d)", name, seqs[name], s, got, want, k)
				}
			}
			ks = append(ks, k)
		}
		if !(ks[0] >= ks[1] && ks[1] >= ks[2] && ks[2]+1 >= ks[0]) {
			t.Errorf("the group point at %s is not one instant: records up to a=%d b=%d c=%d", at.Format(time.StampMicro), ks[0], ks[1], ks[2])
		}
		newest = max(newest, ks[2])
		checked++
	}
	if checked < 5 {
		t.Errorf("only %d group points checked", checked)
	}
	if newest != n {
		t.Errorf("the newest group point holds records up to %d of %d", newest, n)
	}
	t.Logf("%d records on 3 disks, %d group points checked", n, checked)
}

// TestExt4OnTrackedDisk: mkfs.ext4 on a tracked disk, loop-mounted, files
// written and fsynced while points are cut. Every point after mkfs, once
// its journal is replayed as a recovery would, passes fsck -n and holds
// every file fsynced before its cut.
func TestExt4OnTrackedDisk(t *testing.T) {
	needFUSE(t, "mkfs.ext4", "e2fsck", "debugfs", "mount", "umount")
	const size = 64 << 20
	disks, _, stop := runServed(t, size, 500*time.Millisecond, []string{"fs"})
	d := disks["fs"]
	clk := clock.Real{}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "nodiscard", d.path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if f, err := os.OpenFile(d.path, os.O_RDWR, 0); err == nil {
		f.Sync()
		f.Close()
	}
	mkfsDone := clk.Now()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", d.path, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop: %v\n%s", err, out)
	}
	mounted := true
	umount := func() {
		if mounted {
			mounted = false
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount: %v\n%s", err, out)
			}
		}
	}
	defer umount()
	type fsynced struct {
		name string
		data []byte
		at   time.Time
	}
	var files []fsynced
	rng := rand.New(rand.NewPCG(3, 4))
	dirf, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	end := clk.Now().Add(5 * time.Second)
	for i := 0; clk.Now().Before(end); i++ {
		name := fmt.Sprintf("f%04d", i)
		data := make([]byte, 4096*(1+rng.IntN(16)))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		f, err := os.Create(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := dirf.Sync(); err != nil {
			t.Fatal(err)
		}
		files = append(files, fsynced{name, data, clk.Now()})
		time.Sleep(40 * time.Millisecond)
	}
	dirf.Close()
	umount()
	time.Sleep(time.Second)
	stop()
	checked := 0
	for _, p := range d.r.Points() {
		if !p.Time.After(mkfsDone.Round(0)) {
			continue
		}
		img := filepath.Join(t.TempDir(), "point.img")
		if _, err := d.r.Export(context.Background(), p.Seq, img); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("e2fsck", "-E", "journal_only", "-y", img).CombinedOutput(); err != nil {
			t.Fatalf("point %d: journal replay: %v\n%s", p.Seq, err, out)
		}
		if out, err := exec.Command("e2fsck", "-f", "-n", img).CombinedOutput(); err != nil {
			t.Fatalf("point %d: fsck -n: %v\n%s", p.Seq, err, out)
		}
		dump := t.TempDir()
		if out, err := exec.Command("debugfs", "-R", "rdump / "+dump, img).CombinedOutput(); err != nil {
			t.Fatalf("point %d: debugfs rdump: %v\n%s", p.Seq, err, out)
		}
		for _, f := range files {
			if !f.at.Round(0).Before(p.Time) {
				continue
			}
			got, err := os.ReadFile(filepath.Join(dump, f.name))
			if err != nil || !bytes.Equal(got, f.data) {
				t.Fatalf("point %d (cut %s): file %s fsynced at %s is missing or differs (%v)", p.Seq, p.Time.Format(time.StampMicro), f.name, f.at.Format(time.StampMicro), err)
			}
		}
		os.Remove(img)
		checked++
	}
	if checked < 5 {
		t.Errorf("only %d points after mkfs checked", checked)
	}
	t.Logf("%d files fsynced, %d points checked with fsck -n", len(files), checked)
}
