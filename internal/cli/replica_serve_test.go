package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

func needFUSERoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "FUSE mounts need root here"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	}
	if why == "" {
		return
	}
	if os.Getenv("STANDBY_TEST_REQUIRE_ALL") == "1" {
		t.Fatal(why + " (STANDBY_TEST_REQUIRE_ALL=1)")
	}
	t.Skip(why)
}

func TestReplicaServeBadInput(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)
	taken := filepath.Join(dir, "taken")
	os.WriteFile(taken, nil, 0o644)
	for _, args := range [][]string{
		{"replica", "serve"},
		{"replica", "serve", "--source", img, "--replica", filepath.Join(dir, "r")},
		{"replica", "serve", "--source", img, "--mount", filepath.Join(dir, "m")},
		{"replica", "serve", "--source", img, "--mount", filepath.Join(dir, "m"), "--replica", "r", "--grain", "128KiB"},
		{"replica", "serve", "--source", img, "--mount", taken, "--replica", filepath.Join(dir, "r")},
		{"replica", "serve", "--source", img, "--mount", filepath.Join(dir, "m"), "--replica", "r", "--to", "tcp://127.0.0.1:1/a/b"},
		{"replica", "watch"},
		{"replica", "watch", "--mount", filepath.Join(dir, "nothing")},
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), args, nil, &out, &errb); code != ExitBadInput {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitBadInput, errb.String())
		}
	}
}

// serveDisk is one disk of the kill test: its record of writes.
type serveDisk struct {
	name, img, mount, replica string
	writes                    []serveWrite
}

type serveWrite struct {
	id     uint64
	off, n int64
}

func fillRecord(p []byte, id uint64, off int64) {
	for s := 0; s < len(p); s += 4096 {
		binary.LittleEndian.PutUint64(p[s:], id)
		binary.LittleEndian.PutUint64(p[s+8:], uint64(off)+uint64(s))
		r := rand.New(rand.NewPCG(id, uint64(s)))
		for i := s + 16; i < s+4096; i += 8 {
			binary.LittleEndian.PutUint64(p[i:], r.Uint64())
		}
	}
}

func newestRecord(img []byte) uint64 {
	var k uint64
	for s := 0; s+4096 <= len(img); s += 4096 {
		if id := binary.LittleEndian.Uint64(img[s:]); id > k && binary.LittleEndian.Uint64(img[s+8:]) == uint64(s) {
			k = id
		}
	}
	return k
}

// TestServeKillResume kills replica serve (SIGKILL) while it ships, and
// restarts it: replication resumes, a resync runs only for the disks
// written since their last point, and every point, before and after the
// kills, verifies and holds exactly a prefix of the writes.
func TestServeKillResume(t *testing.T) {
	needFUSERoot(t)
	bin := standbyBinary(t)
	dir := t.TempDir()
	const size = 16 << 20
	disks := []*serveDisk{{name: "a"}, {name: "b"}}
	args := []string{"replica", "serve", "--every", "200ms", "--threads", "2", "-o", "json"}
	for _, d := range disks {
		d.img, d.mount, d.replica = filepath.Join(dir, d.name+".img"), filepath.Join(dir, d.name), filepath.Join(dir, d.name+".replica")
		if err := os.WriteFile(d.img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(d.img, size)
		args = append(args, "--source", d.img, "--mount", d.mount, "--replica", d.replica)
	}
	statusPath := serveStatusPath(disks[0].mount)
	var proc *exec.Cmd
	var logs bytes.Buffer
	start := func() {
		t.Helper()
		os.Remove(statusPath)
		proc = exec.Command(bin, args...)
		proc.Stdout, proc.Stderr = &logs, &logs
		if err := proc.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := readServeStatus(statusPath)
			if err == nil && st.PID == proc.Process.Pid {
				if _, err := os.Stat(disks[len(disks)-1].mount); err == nil {
					return
				}
			}
			if time.Now().After(deadline) {
				proc.Process.Kill()
				proc.Wait()
				t.Fatalf("serve did not come up:\n%s", logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Cleanup(func() {
		if proc != nil && proc.ProcessState == nil {
			proc.Process.Signal(syscall.SIGTERM)
			proc.Wait()
		}
		for _, d := range disks {
			exec.Command("umount", "-l", filepath.Join(dir, ".standby-mnt-"+d.name)).Run()
		}
	})
	rng := rand.New(rand.NewPCG(11, 12))
	var id uint64
	// Writes of up to 1 MiB from a page-aligned buffer reach serve whole,
	// on one side of a cut.
	buf, err := syscall.Mmap(-1, 0, 1<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(buf)
	write := func(d *serveDisk, count int, maxBlocks int) {
		t.Helper()
		f, err := os.OpenFile(d.mount, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for range count {
			id++
			n := int64(1+rng.IntN(maxBlocks)) * 4096
			off := rng.Int64N((size-n)/4096+1) * 4096
			fillRecord(buf[:n], id, off)
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
			d.writes = append(d.writes, serveWrite{id, off, n})
		}
	}
	statusEvents := func() []string {
		st, err := readServeStatus(statusPath)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range st.Events {
			out = append(out, e.Disk+" "+e.Kind+" "+e.Message)
		}
		return out
	}
	pointsOf := func(d *serveDisk) []replica.Point {
		r, err := replica.Open(d.replica, replica.Options{Clock: clock.Real{}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		return r.Points()
	}
	kill := func() {
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		proc.Process.Kill()
		proc.Wait()
	}
	resyncing := func(events []string, disk string) bool {
		for _, e := range events {
			if strings.HasPrefix(e, disk+" state resyncing") {
				return true
			}
		}
		return false
	}

	start()
	write(disks[0], 40, 256)
	write(disks[1], 5, 16)
	time.Sleep(time.Second) // both shipped, idle
	// Round 1: only disk a is written before the kill. Disk b's intent is
	// still set from its writes (regions stay marked for 30 s), so both
	// resync; round 2 waits that out for b.
	write(disks[0], 100, 256)
	kill()
	start()
	time.Sleep(600 * time.Millisecond)
	ev := statusEvents()
	if !resyncing(ev, "a") {
		t.Errorf("after a kill during disk a's writes, a did not resync: %v", ev)
	}
	before := map[string][]replica.Point{}
	// Round 2: a clean stop and start records no resync at all.
	proc.Process.Signal(syscall.SIGTERM)
	if err := proc.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, logs.String())
	}
	for _, d := range disks {
		before[d.name] = pointsOf(d)
	}
	start()
	time.Sleep(300 * time.Millisecond)
	if ev := statusEvents(); resyncing(ev, "a") || resyncing(ev, "b") {
		t.Errorf("after a clean stop, a resync: %v", ev)
	}
	// Round 3: kill while disk a is being shipped; disk b, idle and
	// committed, needs no resync.
	write(disks[0], 100, 256)
	kill()
	start()
	time.Sleep(600 * time.Millisecond)
	ev = statusEvents()
	if !resyncing(ev, "a") || resyncing(ev, "b") {
		t.Errorf("round 3: want a resync of disk a only: %v", ev)
	}
	write(disks[0], 20, 64)
	write(disks[1], 20, 64)
	time.Sleep(800 * time.Millisecond)
	var wout, werr bytes.Buffer
	if code := Main(context.Background(), []string{"replica", "watch", "--mount", disks[0].mount, "--once"}, nil, &wout, &werr); code != 0 ||
		!strings.Contains(wout.String(), "protected") || !strings.Contains(wout.String(), "RPO") {
		t.Errorf("replica watch --once: exit %d\n%s%s", code, wout.String(), werr.String())
	}
	proc.Process.Signal(syscall.SIGTERM)
	if err := proc.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, logs.String())
	}

	for _, d := range disks {
		r, err := replica.Open(d.replica, replica.Options{Clock: clock.Real{}})
		if err != nil {
			t.Fatal(err)
		}
		pts := r.Points()
		have := map[uint64]time.Time{}
		for _, p := range pts {
			have[p.Seq] = p.Time
		}
		for _, p := range before[d.name] {
			if at, ok := have[p.Seq]; !ok || !at.Equal(p.Time) {
				t.Errorf("disk %s: point %d was lost over a kill", d.name, p.Seq)
			}
		}
		model := make([]byte, size)
		next := 0
		for _, p := range pts {
			if err := r.Verify(context.Background(), p.Seq); err != nil {
				t.Fatalf("disk %s: %v", d.name, err)
			}
			out := filepath.Join(dir, "export.img")
			if _, err := r.Export(context.Background(), p.Seq, out); err != nil {
				t.Fatal(err)
			}
			img, _ := os.ReadFile(out)
			k := newestRecord(img)
			for next < len(d.writes) && d.writes[next].id <= k {
				w := d.writes[next]
				fillRecord(model[w.off:w.off+w.n], w.id, w.off)
				next++
			}
			if !bytes.Equal(img, model) {
				t.Fatalf("disk %s point %d is not the disk after write %d", d.name, p.Seq, k)
			}
		}
		if next != len(d.writes) {
			t.Errorf("disk %s: the last point holds %d of %d writes", d.name, next, len(d.writes))
		}
		r.Close()
		t.Logf("disk %s: %d writes, %d points, all verified and exact", d.name, len(d.writes), len(pts))
	}
	var st ServeStatus
	b, _ := os.ReadFile(statusPath)
	if err := json.Unmarshal(b, &st); err != nil || st.State != "stopped" {
		t.Errorf("final status: %s (%v)", st.State, err)
	}
}
