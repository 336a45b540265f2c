package recovery_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/recovery"
)

// The crash test runs a job in a child process (this test binary again),
// kills it with SIGKILL at the k-th step boundary for k = 1, 2, ... until
// the child finishes on its own, and resumes the job in the parent each
// time. A boundary is every stored transition and every moment between a
// step's effect and its return. An idempotency ledger checks that each
// step's effect happened exactly once although a step may start twice.

const crashJob = "crash-job"

func crashSteps() []recovery.Step {
	return []recovery.Step{
		step("pin"),
		step("net-a", "pin"), step("net-b", "pin"),
		step("boot", "net-a", "net-b"),
		step("check", "boot"),
	}
}

// ledgerExec is an idempotent executor: its effect is one line in
// ledger.log, written only when the step's line is not there yet. Every
// start is logged in starts.log. afterEffect is the boundary hook.
type ledgerExec struct {
	dir         string
	afterEffect func()
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func lines(path string) []string {
	b, _ := os.ReadFile(path)
	return strings.Fields(string(b))
}

func (e ledgerExec) Execute(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
	if err := appendLine(filepath.Join(e.dir, "starts.log"), s.ID); err != nil {
		return nil, err
	}
	ledger := filepath.Join(e.dir, "ledger.log")
	done := false
	for _, l := range lines(ledger) {
		done = done || l == s.ID
	}
	if !done {
		if err := appendLine(ledger, s.ID); err != nil {
			return nil, err
		}
	}
	if e.afterEffect != nil {
		e.afterEffect()
	}
	return json.RawMessage(`{}`), nil
}

// TestCrashChild is the child's side; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("STANDBY_RECOVERY_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestCrashResume")
	}
	killAt, _ := strconv.Atoi(os.Getenv("STANDBY_RECOVERY_CRASH_AT"))
	var n atomic.Int64
	boundary := func() {
		if n.Add(1) == int64(killAt) {
			fmt.Println("BOUNDARY")
			os.Stdout.Sync()
			select {} // wait for the SIGKILL
		}
	}
	store, _ := openStore(t, filepath.Join(dir, "state.db"), clock.Real{})
	d := recovery.New(store, ledgerExec{dir: dir, afterEffect: boundary}, recovery.Options{Parallel: 2, NewID: func() string { return crashJob }})
	d.Observe(func(api.Event) { boundary() })
	if _, err := d.Create(context.Background(), recovery.Job{Operation: "failover", Plan: "app", Steps: crashSteps()}); err != nil {
		t.Fatal(err)
	}
	j, err := d.Run(context.Background(), crashJob)
	if err != nil || j.Status != api.StatusSucceeded {
		t.Fatalf("child run: %v %s", err, j.Status)
	}
	fmt.Println("FINISHED")
}

func TestCrashResume(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	restarted := 0
	for k := 1; ; k++ {
		if k > 100 {
			t.Fatal("the child never finished on its own")
		}
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "STANDBY_RECOVERY_CRASH_DIR="+dir, "STANDBY_RECOVERY_CRASH_AT="+strconv.Itoa(k))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		outcome := ""
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); l == "BOUNDARY" || l == "FINISHED" {
				outcome = l
				break
			}
		}
		if outcome == "BOUNDARY" {
			cmd.Process.Signal(syscall.SIGKILL)
		}
		go func() {
			for sc.Scan() {
			}
		}()
		werr := cmd.Wait()
		switch outcome {
		case "FINISHED":
			if werr != nil {
				t.Fatalf("k=%d: child: %v", k, werr)
			}
		case "BOUNDARY":
		default:
			t.Fatalf("k=%d: child ended without reaching a boundary: %v", k, werr)
		}

		// The daemon restarts: resume the job where it stood.
		store, db := openStore(t, filepath.Join(dir, "state.db"), clock.Real{})
		d := recovery.New(store, ledgerExec{dir: dir}, recovery.Options{Parallel: 2})
		j, err := d.Run(context.Background(), crashJob)
		if err != nil || j.Status != api.StatusSucceeded {
			t.Fatalf("k=%d: resume: %v, job %s: %s", k, err, j.Status, statuses(j))
		}
		for _, s := range j.Steps {
			if s.Status != api.StatusSucceeded {
				t.Fatalf("k=%d: step %s is %s", k, s.ID, s.Status)
			}
		}
		// Each effect happened exactly once.
		count := map[string]int{}
		for _, l := range lines(filepath.Join(dir, "ledger.log")) {
			count[l]++
		}
		for _, s := range crashSteps() {
			if count[s.ID] != 1 {
				t.Fatalf("k=%d: step %s took effect %d times; ledger %v", k, s.ID, count[s.ID], lines(filepath.Join(dir, "ledger.log")))
			}
		}
		if len(lines(filepath.Join(dir, "starts.log"))) > len(crashSteps()) {
			restarted++
		}
		// A second resume does nothing.
		evs, _ := d.Events(context.Background(), crashJob, 0)
		starts := len(lines(filepath.Join(dir, "starts.log")))
		again, err := d.Run(context.Background(), crashJob)
		evs2, _ := d.Events(context.Background(), crashJob, 0)
		if err != nil || len(evs2) != len(evs) || !again.Finished.Equal(j.Finished) || len(lines(filepath.Join(dir, "starts.log"))) != starts {
			t.Fatalf("k=%d: second resume: %v, %d events after %d", k, err, len(evs2), len(evs))
		}
		db.Close()
		if outcome == "FINISHED" {
			t.Logf("killed at %d boundaries; %d runs started a step twice", k-1, restarted)
			break
		}
	}
	if restarted == 0 {
		t.Fatal("no kill landed while a step ran: the test proves nothing")
	}
}
