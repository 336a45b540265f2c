package cli

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/examples"
	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

// agentSpec writes the quickstart spec with small disks, points every
// second, 64 KiB blocks and app1 and app2 in one consistency group.
func agentSpec(t *testing.T, dir string) string {
	t.Helper()
	b, err := examples.Files.ReadFile(examples.Quickstart)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, r := range [][2]string{
		{"size: 64MiB", "size: 2MiB"},
		{"size: 256MiB", "size: 4MiB"},
		{"crashConsistentFrequency: 10s", "crashConsistentFrequency: 1s\n      blockSize: 64KiB"},
		{"      policy: default\n", "      policy: default\n      consistencyGroup: contoso\n"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("the quickstart spec has no %q", r[0])
		}
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	file := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestAgentBadInput(t *testing.T) {
	dir := t.TempDir()
	file := agentSpec(t, dir)
	for _, args := range [][]string{
		{"agent"},
		{"agent", "-f", file, "--to", "https://127.0.0.1:1"},
		{"agent", "-f", file, "--site", "nowhere", "--to", "https://127.0.0.1:1", "--insecure-loopback"},
		{"agent", "-f", file, "--site", "southeastasia", "--to", "https://127.0.0.1:1", "--insecure-loopback"},
		{"agent", "-f", file, "--site", "eastasia", "--to", "https://127.0.0.1:1/app1", "--insecure-loopback"},
		{"agent", "-f", file, "--site", "eastasia", "--to", "https://192.0.2.1:1", "--insecure-loopback"},
		{"agent", "-f", file, "--site", "eastasia", "--to", "https://192.0.2.1:1"},
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), append(args, "--dir", dir), nil, &out, &errb); code != ExitBadInput {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitBadInput, errb.String())
		}
	}
}

// TestAgentToReceiver runs a receiver and an agent for the eastasia site
// of a small spec on loopback: written disks reach the receiver within
// seconds, and after a stop every point there verifies, holds a prefix of
// the writes, the newest all of them, and app1 and app2 were cut together.
func TestAgentToReceiver(t *testing.T) {
	needFUSERoot(t)
	bin := standbyBinary(t)
	dir := t.TempDir()
	file := agentSpec(t, dir)
	root, agentDir := filepath.Join(dir, "replicas"), filepath.Join(dir, "agent")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rctx, stopReceiver := context.WithCancel(context.Background())
	var rout, rerr bytes.Buffer
	received := make(chan int, 1)
	go func() {
		received <- Main(rctx, []string{"receiver", "--listen", addr, "--root", root, "--insecure-loopback"}, nil, &rout, &rerr)
	}()
	defer func() {
		stopReceiver()
		<-received
	}()

	var logs bytes.Buffer
	proc := exec.Command(bin, "agent", "-f", file, "--site", "eastasia", "--to", "https://"+addr,
		"--dir", agentDir, "--insecure-loopback")
	proc.Stdout, proc.Stderr = &logs, &logs
	t.Cleanup(func() {
		if proc.Process != nil && proc.ProcessState == nil {
			proc.Process.Signal(syscall.SIGTERM)
			proc.Wait()
		}
		for _, vm := range []string{"app1", "app2"} {
			for _, d := range []string{"os", "data"} {
				exec.Command("umount", "-l", capture.MountDir(filepath.Join(agentDir, "mnt", vm, d))).Run()
			}
		}
	})
	// The receiver may take a moment to listen: the agent dials at start.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver did not listen: %s", rerr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	statusPath := serveStatusPath(filepath.Join(agentDir, "mnt", "app1", "os"))
	lastMount := filepath.Join(agentDir, "mnt", "app2", "data")
	deadline = time.Now().Add(15 * time.Second)
	for {
		st, err := readServeStatus(statusPath)
		if err == nil && st.PID == proc.Process.Pid {
			if _, err := os.Stat(lastMount); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not come up:\n%s\nreceiver:\n%s", logs.String(), rerr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A writer writes paired records to app1/data and app2/data.
	disks := []*serveDisk{
		{name: "app1/data", mount: filepath.Join(agentDir, "mnt", "app1", "data"), replica: filepath.Join(root, "app1", "data")},
		{name: "app2/data", mount: filepath.Join(agentDir, "mnt", "app2", "data"), replica: filepath.Join(root, "app2", "data")},
	}
	const size = 4 << 20
	buf, err := syscall.Mmap(-1, 0, 256<<10, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(buf)
	var files []*os.File
	for _, d := range disks {
		f, err := os.OpenFile(d.mount, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	rng := rand.New(rand.NewPCG(4, 5))
	var id uint64
	for range 30 {
		id++
		for i, d := range disks {
			n := int64(1+rng.IntN(64)) * 4096
			off := rng.Int64N((size-n)/4096+1) * 4096
			fillRecord(buf[:n], id, off)
			if _, err := files[i].WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
			d.writes = append(d.writes, serveWrite{id, off, n})
		}
		time.Sleep(80 * time.Millisecond) // 2.4 s of writes: several cuts
	}
	for _, f := range files {
		f.Close()
	}
	wrote := time.Now()

	// Within a few seconds, a point after the last write is at the
	// receiver for both disks.
	deadline = time.Now().Add(10 * time.Second)
	for {
		st, err := readServeStatus(statusPath)
		caught := 0
		if err == nil {
			for _, vm := range st.VMs {
				for _, d := range vm.Disks {
					if d.Name == "data" && d.LastPoint != nil && d.LastPoint.Time.After(wrote) {
						caught++
					}
				}
			}
		}
		if caught == 2 {
			t.Logf("both data disks have a point after the last write %s later", time.Since(wrote).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no point after the writes within 10 s (status %v):\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var wout, werr bytes.Buffer
	if code := Main(context.Background(), []string{"replica", "watch", "--mount", filepath.Join(agentDir, "mnt", "app1", "os"), "--once"}, nil, &wout, &werr); code != 0 ||
		!strings.Contains(wout.String(), "contoso: protected") {
		t.Errorf("replica watch --once: exit %d\n%s%s", code, wout.String(), werr.String())
	}

	proc.Process.Signal(syscall.SIGTERM)
	if err := proc.Wait(); err != nil {
		t.Fatalf("agent after SIGTERM: %v\n%s", err, logs.String())
	}
	if _, err := os.Lstat(lastMount); err == nil {
		t.Errorf("%s is still there after the agent stopped", lastMount)
	}
	st, err := readServeStatus(statusPath)
	if err != nil || st.State != "stopped" {
		t.Errorf("final status: %v %v", st, err)
	}
	stopReceiver()
	if code := <-received; code != 0 {
		t.Errorf("receiver: exit %d\n%s", code, rerr.String())
	}
	received <- 0 // for the deferred stop

	// Every point verifies and holds exactly a prefix of the writes; the
	// two VMs' points, cut together, hold the same prefix.
	prefixes := map[string][]uint64{}
	for _, d := range disks {
		r, err := replica.Open(d.replica, replica.Options{Clock: clock.Real{}})
		if err != nil {
			t.Fatal(err)
		}
		pts := r.Points()
		model := make([]byte, size)
		next := 0
		for _, p := range pts {
			if err := r.Verify(context.Background(), p.Seq); err != nil {
				t.Fatalf("%s: %v", d.name, err)
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
				t.Fatalf("%s point %d is not the disk after write %d", d.name, p.Seq, k)
			}
			prefixes[d.name] = append(prefixes[d.name], k)
		}
		if next != len(d.writes) {
			t.Errorf("%s: the newest point holds %d of %d writes", d.name, next, len(d.writes))
		}
		r.Close()
		t.Logf("%s: %d writes, %d points, all verified and exact", d.name, len(d.writes), len(pts))
	}
	a, b := prefixes["app1/data"], prefixes["app2/data"]
	if len(a) != len(b) {
		t.Errorf("app1/data has %d points, app2/data %d: they are cut together", len(a), len(b))
	} else {
		// Each write goes to app1/data, then, once acknowledged, to
		// app2/data: a cut may fall between the two (app1 one write ahead),
		// but a point where app2 holds a write app1 lacks, or where they
		// are further apart, is not one instant.
		for i := range a {
			if a[i] != b[i] && a[i] != b[i]+1 {
				t.Errorf("point %d: app1/data holds writes to %d, app2/data to %d: not one cut", i, a[i], b[i])
			}
		}
	}
}
