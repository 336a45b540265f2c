package ship

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

// The kill test runs the receiver in a child process: this test binary,
// started again with childReceiverEnv set to ADDR ROOT.
const childReceiverEnv = "STANDBY_SHIP_TEST_RECEIVER"

func TestMain(m *testing.M) {
	if v := os.Getenv(childReceiverEnv); v != "" {
		os.Exit(runChildReceiver(v))
	}
	os.Exit(m.Run())
}

func runChildReceiver(v string) int {
	addr, root, _ := strings.Cut(v, " ")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	rc := &Receiver{Root: root, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	fmt.Println("ready")
	if err := rc.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

// startChild starts a receiver process on addr and waits until it listens.
func startChild(t *testing.T, addr, root string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childReceiverEnv+"="+addr+" "+root)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("receiver process: %v", err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("receiver process did not start")
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// A receiver killed with SIGKILL in the middle of a point and started
// again: the sender redials, resumes, and the point commits whole; the
// previous point is intact.
func TestReceiverKilledMidPoint(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	const blocks = 32
	makeImage(t, src, blocks, 21)
	root := filepath.Join(dir, "root")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	child := startChild(t, addr, root)
	url := "tcp://" + addr + "/vm/disk"
	const streams = 4
	c, err := Dial(ctx, url, Options{Streams: streams, Size: blocks * testBlock, BlockSize: testBlock, RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p1, err := push(ctx, c, src, dir, streams)
	if err != nil {
		t.Fatal(err)
	}
	want1 := fileHash(t, src)

	// Point 2 rewrites every block, slowly enough to be killed half way.
	rewriteBlocks(t, src, 1, 22)
	want2 := fileHash(t, src)
	c.Close()
	c, err = Dial(ctx, url, Options{Streams: streams, Size: blocks * testBlock, RetryFor: 20 * time.Second,
		Limiter: NewLimiter(16<<20, clock.Real{})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	var p2Seq uint64
	go func() {
		p, err := push(ctx, c, src, dir, streams)
		p2Seq = p.Seq
		done <- err
	}()
	for c.Stats().Extents < blocks/3 {
		select {
		case err := <-done:
			t.Fatalf("point 2 finished before the kill: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	killedAt := c.Stats().Extents
	time.Sleep(300 * time.Millisecond) // the sender finds the receiver gone and backs off
	child = startChild(t, addr, root)
	if err := <-done; err != nil {
		t.Fatalf("point 2 after the receiver restarted: %v", err)
	}
	st := c.Stats()
	t.Logf("killed after %d of %d extents acknowledged; sender %+v", killedAt, blocks, st)
	if st.Reconnects == 0 {
		t.Error("no stream was redialled")
	}
	// Only what was in flight at the kill is sent again: at most one
	// extent per stream.
	if st.Resent > streams {
		t.Errorf("%d extents sent again, more than the %d in flight", st.Resent, streams)
	}
	child.Process.Signal(syscall.SIGTERM)
	if err := child.Wait(); err != nil {
		t.Fatalf("receiver did not stop cleanly on SIGTERM: %v", err)
	}
	rdir := replicaDir(root, "vm/disk")
	ps := points(t, rdir)
	if len(ps) != 2 || ps[0].Seq != p1.Seq || ps[1].Seq != p2Seq {
		t.Fatalf("points %+v, want %d and %d", ps, p1.Seq, p2Seq)
	}
	if pointHash(t, rdir, p1.Seq) != want1 {
		t.Error("point 1 is no longer the source as it was")
	}
	if pointHash(t, rdir, p2Seq) != want2 {
		t.Error("point 2 differs from the source")
	}
}
