package procgroup

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// A group whose leader ignores SIGTERM is stopped by SIGKILL after the
// grace, children included, and a stale pid is never signalled.
func TestStopEscalates(t *testing.T) {
	cmd := exec.Command("sh", "-c", "trap '' TERM; sleep 60 & sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	g := Of(cmd.Process.Pid)
	deadline := time.Now().Add(5 * time.Second)
	for len(g.Members()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !g.Running() || len(g.Members()) < 2 {
		t.Fatalf("running %v, members %v", g.Running(), g.Members())
	}
	start := time.Now()
	reaped := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	if err := g.Stop(context.Background(), 200*time.Millisecond, reaped); err != nil {
		t.Fatal(err)
	}
	if len(g.Members()) != 0 || g.Running() {
		t.Fatalf("members left: %v", g.Members())
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("SIGKILL came before the grace: %s", d)
	}
	// A group whose leader's start time differs is not ours.
	other := Group{PID: g.PID, Ticks: g.Ticks + 1}
	other.Signal(syscall.SIGKILL) // must do nothing (and the pid is gone anyway)
	if other.Running() {
		t.Error("a group with another start time counts as running")
	}
}
