package capture

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func newTrackedFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// readCut reads every extent of c into a copy of base.
func readCut(t *testing.T, c *TrackedCut, base []byte) []byte {
	t.Helper()
	out := bytes.Clone(base)
	for _, e := range c.Extents(1 << 20) {
		if err := c.ReadAt(out[e.Off:e.Off+e.Len], e.Off); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestCopyBeforeWrite cuts while writers keep writing and checks that each
// cut, read while it is being overwritten, is exactly the disk at the cut.
func TestCopyBeforeWrite(t *testing.T) {
	const size = 8 << 20
	p := newTrackedFile(t, size)
	d, err := OpenTracked(p, TrackedOptions{Grain: 4096, BlockSize: 16384, Target: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if r := d.Resync(); !r.Needed || !r.Full || r.Bytes != 0 {
		t.Fatalf("a new sparse disk: resync %+v, want an initial sync of nothing", r)
	}
	model := make([]byte, size) // the disk as the writers left it
	replicaImg := make([]byte, size)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	write := func() {
		n := int64(1+rng.IntN(64)) * 512
		off := rng.Int64N(size - n)
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		mu.Lock()
		defer mu.Unlock()
		if _, err := d.WriteAt(buf, off); err != nil {
			t.Error(err)
		}
		copy(model[off:], buf)
	}
	for range 200 {
		write()
	}
	for round := range 20 {
		mu.Lock()
		cuts, _, err := CutTracked([]*Tracked{d})
		want := bytes.Clone(model)
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		c := cuts[0]
		// Writes race with the reading of the cut.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				write()
			}
		}()
		got := readCut(t, c, replicaImg)
		wg.Wait()
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d: the cut differs from the disk at the cut", round)
		}
		replicaImg = got
		if err := d.Committed(c, uint64(round+1), c.Time()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteRightAfterCut has writers hammer a disk while cuts follow one
// another: a write that lands the instant the barrier is released must find
// the new cut ready for copy-before-write.
func TestWriteRightAfterCut(t *testing.T) {
	const size = 1 << 20
	d, err := OpenTracked(newTrackedFile(t, size), TrackedOptions{Grain: 4096, BlockSize: 4096, Target: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := d.WriteAt(buf, int64((i*4+w)%(size/4096))*4096); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for round := range 2000 {
		cuts, _, err := CutTracked([]*Tracked{d})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Committed(cuts[0], uint64(round+1), cuts[0].Time()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestResyncAfterCrash checks the journal: a clean shutdown resumes exactly,
// a crash resyncs only the regions written, a resize or another replica
// resyncs the whole disk.
func TestResyncAfterCrash(t *testing.T) {
	const size = 4 << 20
	p := newTrackedFile(t, size)
	open := func(newest uint64) *Tracked {
		t.Helper()
		d, err := OpenTracked(p, TrackedOptions{Grain: 4096, Target: "r", Region: 64 << 10, Newest: newest, QuietAfter: time.Nanosecond})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := open(1)
	if r := d.Resync(); !r.Full {
		t.Fatalf("no state: %+v, want a full resync", r)
	}
	cuts, _, _ := CutTracked([]*Tracked{d})
	if cuts[0].Bytes() != size {
		t.Fatalf("full resync cut holds %d bytes", cuts[0].Bytes())
	}
	if err := d.Committed(cuts[0], 2, cuts[0].Time()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 100), 200<<10); err != nil {
		t.Fatal(err)
	}
	// Clean shutdown: resumes with exactly that grain dirty.
	if err := d.Shutdown(2, time.Now()); err != nil {
		t.Fatal(err)
	}
	d = open(2)
	if r := d.Resync(); r.Needed {
		t.Fatalf("after a clean shutdown: %+v", r)
	}
	cuts, _, _ = CutTracked([]*Tracked{d})
	if got := cuts[0].Extents(1 << 20); len(got) != 1 || got[0] != (Range{Off: 200 << 10, Len: 4096}) {
		t.Fatalf("after a clean shutdown the cut is %v", got)
	}
	if err := d.Committed(cuts[0], 3, cuts[0].Time()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 100), 1<<20); err != nil {
		t.Fatal(err)
	}
	// Crash: the region written since point 3 is resent, nothing else.
	d.Close()
	d = open(3)
	if r := d.Resync(); !r.Needed || r.Full || r.Bytes != 64<<10 {
		t.Fatalf("after a crash: %+v, want a resync of one 64 KiB region", r)
	}
	d.Close()
	// A resize: everything.
	if err := os.Truncate(p, size*2); err != nil {
		t.Fatal(err)
	}
	d = open(3)
	if r := d.Resync(); !r.Full {
		t.Fatalf("after a resize: %+v, want a full resync", r)
	}
	d.Close()
}

// needFUSE skips outside CI when FUSE cannot be mounted.
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

func TestServeFUSE(t *testing.T) {
	needFUSE(t)
	const size = 16 << 20
	p := newTrackedFile(t, size)
	d, err := OpenTracked(p, TrackedOptions{Target: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	path := filepath.Join(t.TempDir(), "vm-disk")
	m, err := Serve(path, d)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if fi.Size() != size {
		t.Errorf("served size %d, want %d", fi.Size(), size)
	}
	// A process started now (a machine) must not hold the FUSE device:
	// it would keep the mount alive, and hanging, after this process dies.
	child := exec.Command("sleep", "5")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", child.Process.Pid))
	for _, e := range fds {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", child.Process.Pid, e.Name())); l == "/dev/fuse" {
			t.Errorf("a child process inherited /dev/fuse as fd %s", e.Name())
		}
	}
	child.Process.Kill()
	child.Wait()
	data := bytes.Repeat([]byte("standby!"), 1<<17) // 1 MiB
	if _, err := f.WriteAt(data, 3<<20); err != nil {
		t.Error(err)
	}
	if err := f.Sync(); err != nil {
		t.Error(err)
	}
	if err := f.Truncate(1 << 20); err == nil {
		t.Error("a served disk was resized")
	}
	if _, err := f.WriteAt(data, size-4096); err == nil {
		t.Error("a write past the end of the disk succeeded")
	}
	f.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	back, _ := os.ReadFile(p)
	if !bytes.Equal(back[3<<20:4<<20], data) {
		t.Error("the write did not reach the backing file")
	}
	if st := d.Stats(); st.DirtyBytes != 1<<20 {
		t.Errorf("dirty %d bytes, want 1 MiB", st.DirtyBytes)
	}
	if _, err := os.Lstat(path); err == nil {
		t.Error("the link is still there after Close")
	}
}
