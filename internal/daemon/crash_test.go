package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/spec"
	"github.com/standby-dr/standby/internal/workload"
)

// The child side of the crash tests: a daemon that runs an operation and
// SIGKILLs itself when the given number of steps have started.
const (
	envChild  = "STANDBY_DAEMON_CRASH_CHILD"
	envDir    = "STANDBY_DAEMON_CRASH_DIR"
	envKillAt = "STANDBY_DAEMON_CRASH_AT"
	envOp     = "STANDBY_DAEMON_CRASH_OP"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func standbyBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "standby-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "standby")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/standby-dr/standby/cmd/standby").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

func quickstart() (*spec.Spec, error) {
	s, err := spec.Load("../../examples/local-quickstart.yaml")
	if err != nil {
		return nil, err
	}
	for i := range s.Protection.VirtualMachines {
		for j := range s.Protection.VirtualMachines[i].Disks {
			s.Protection.VirtualMachines[i].Disks[j].Size = 4 << 20
		}
	}
	return s, nil
}

func open(ctx context.Context, dir, bin string) (*daemon.Daemon, error) {
	s, err := quickstart()
	if err != nil {
		return nil, err
	}
	// The whole path salts the loopback addresses: every test's temporary
	// directory ends in 001.
	return daemon.Open(ctx, daemon.Options{Spec: s, Dir: dir, Executable: bin, Lab: dir})
}

func crashChild() int {
	ctx := context.Background()
	killAt, _ := strconv.Atoi(os.Getenv(envKillAt))
	d, err := open(ctx, os.Getenv(envDir), os.Getenv("STANDBY_DAEMON_CRASH_BIN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if err := d.StartSites(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if err := d.Protect(ctx, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	var mu sync.Mutex
	started := 0
	d.Driver.Observe(func(ev api.Event) {
		if ev.Kind != api.EventStep || ev.Status != api.StatusRunning {
			return
		}
		mu.Lock()
		started++
		n := started
		mu.Unlock()
		if n == killAt {
			// Let the step begin its work, then die mid-way.
			time.Sleep(time.Duration(killAt%3) * 20 * time.Millisecond)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	})
	if os.Getenv(envOp) == "replicate" {
		// Replicate a while, then die with the disks served.
		go d.Replicate(ctx)
		time.Sleep(time.Duration(killAt) * time.Second)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	var op recovery.Job
	switch os.Getenv(envOp) {
	case "drill":
		op, err = d.Planner.Drill("contoso-app")
	default:
		if err := d.StopSource(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		op, err = d.Planner.Failover("contoso-app", recovery.FailoverOptions{})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	j, err := d.Run(ctx, op)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Fprintln(os.Stderr, "the job ended before the kill:", j.Status)
	return 0
}

// runnable counts the steps the driver runs (a manual step only waits).
func runnable(j recovery.Job) int {
	n := 0
	for _, s := range j.Steps {
		if !s.Manual {
			n++
		}
	}
	return n
}

func runChild(t *testing.T, dir, bin, op string, killAt int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envDir+"="+dir, envKillAt+"="+strconv.Itoa(killAt), envOp+"="+op, "STANDBY_DAEMON_CRASH_BIN="+bin)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
		return // killed as planned
	}
	if d, oerr := open(context.Background(), dir, bin); oerr == nil {
		stopAll(t, d)
	}
	t.Fatalf("the child daemon was not killed at step %d: %v\n%s", killAt, err, out)
}

// stopAll stops every machine of a daemon's directory and closes it.
func stopAll(t *testing.T, d *daemon.Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	items, _ := d.Sites.List(ctx, provider.Filter{Kind: provider.KindVM})
	for _, it := range items {
		_ = d.Sites.StopVM(ctx, it.Site, it.Name)
	}
	d.Close()
}

func unfinished(t *testing.T, d *daemon.Daemon, op string) recovery.Job {
	t.Helper()
	js, err := d.Driver.Jobs(context.Background(), recovery.JobFilter{Operation: op})
	if err != nil || len(js) != 1 {
		t.Fatalf("want the one %s job the killed daemon left: %v %d", op, err, len(js))
	}
	return js[0]
}

// Kill the daemon at each step of an unplanned failover, restart, resume:
// the run completes, nothing exists twice, a second resume does nothing.
func TestFailoverSurvivesDaemonKills(t *testing.T) {
	bin := standbyBinary(t)
	s, _ := quickstart()
	pl := recovery.NewPlanner(s)
	j, err := pl.Failover("contoso-app", recovery.FailoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stride := 1
	if testing.Short() {
		stride = 5
	}
	for killAt := 1; killAt <= runnable(j); killAt += stride {
		t.Run(fmt.Sprintf("kill-at-step-%d", killAt), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := t.TempDir()
			runChild(t, dir, bin, "failover", killAt)
			d, err := open(ctx, dir, bin)
			if err != nil {
				t.Fatal(err)
			}
			defer stopAll(t, d)
			if err := d.Protect(ctx, nil); err != nil {
				t.Fatal(err)
			}
			job := unfinished(t, d, recovery.OpFailover)
			got, err := d.Driver.Resume(ctx, job.ID, api.ResumeRequest{})
			for err == nil && got.Status == api.StatusWaiting {
				got, err = d.Driver.Resume(ctx, job.ID, api.ResumeRequest{Ack: true})
			}
			if err != nil || got.Status != api.StatusSucceeded {
				for _, st := range got.Steps {
					if st.Status != api.StatusSucceeded {
						t.Logf("%s %s %s", st.ID, st.Status, st.Error)
					}
				}
				t.Fatalf("resumed failover: %v %s", err, got.Status)
			}
			items, err := d.Sites.List(ctx, provider.Filter{Job: job.ID, Kind: provider.KindVM})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, it := range items {
				if seen[it.Ref.String()] {
					t.Errorf("%s exists twice", it.Ref)
				}
				seen[it.Ref.String()] = true
			}
			if len(items) != 2 {
				t.Errorf("want the 2 recovered machines, got %v", items)
			}
			again, err := d.Driver.Resume(ctx, job.ID, api.ResumeRequest{})
			if err != nil || again.Status != api.StatusSucceeded {
				t.Fatalf("second resume: %v %s", err, again.Status)
			}
			for i := range again.Steps {
				if again.Steps[i].Attempts != got.Steps[i].Attempts {
					t.Errorf("a second resume ran step %s again", again.Steps[i].ID)
				}
			}
		})
	}
}

// A drill killed half way is cleaned up all the same: no machine, network,
// disk or pin of it is left.
func TestDrillCleanupAfterDaemonKill(t *testing.T) {
	bin := standbyBinary(t)
	s, _ := quickstart()
	dj, err := recovery.NewPlanner(s).Drill("contoso-app")
	if err != nil {
		t.Fatal(err)
	}
	n := runnable(dj)
	for _, killAt := range []int{1, n / 2, n - 1, n} {
		t.Run(fmt.Sprintf("kill-at-step-%d", killAt), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := t.TempDir()
			runChild(t, dir, bin, "drill", killAt)
			d, err := open(ctx, dir, bin)
			if err != nil {
				t.Fatal(err)
			}
			defer stopAll(t, d)
			if err := d.Protect(ctx, nil); err != nil {
				t.Fatal(err)
			}
			drill := unfinished(t, d, recovery.OpDrill)
			cj, err := d.Planner.DrillCleanup("contoso-app", drill.ID)
			if err != nil {
				t.Fatal(err)
			}
			cl, err := d.Run(ctx, cj)
			if err != nil || cl.Status != api.StatusSucceeded {
				t.Fatalf("cleanup: %v %s", err, cl.Status)
			}
			left, err := d.Sites.List(ctx, provider.Filter{Job: drill.ID})
			if err != nil || len(left) != 0 {
				t.Errorf("the drill left %v (%v)", left, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "recovered", drill.ID)); !os.IsNotExist(err) {
				t.Errorf("the drill's disks are still there: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "replicas", "app1", "vm.json")); err != nil || strings.Contains(string(b), drill.ID) {
				t.Errorf("the drill's pin is still there: %s %v", b, err)
			}
			if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), drill.ID) {
				t.Errorf("an overlay of the drill is still mounted:\n%s", b)
			}
		})
	}
}

// The daemon serves tracked source disks to their machines; killed, it
// leaves them holding dead files. Restarted, it serves the disks again,
// starts the machines again on them, resyncs what the write-intent log
// names, and its next point equals the disks: nothing a machine had synced
// is lost, at the source or in the replica.
func TestTrackedSourcesAfterDaemonKill(t *testing.T) {
	bin := standbyBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	runChild(t, dir, bin, "replicate", 3)
	d, err := open(ctx, dir, bin)
	if err != nil {
		t.Fatal(err)
	}
	defer stopAll(t, d)
	// What each ledger had synced when the daemon died is on its disk.
	atKill := map[string]uint64{}
	for _, vm := range []string{"app1", "app2"} {
		atKill[vm] = ledgerOnDisk(t, d.DiskPath(vm, "data"))
		if atKill[vm] == 0 {
			t.Fatalf("%s wrote nothing before the kill", vm)
		}
	}
	if err := d.StartSites(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Protect(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range d.Health() {
		if h.Capture != spec.CaptureTracked {
			t.Errorf("%s is captured by %q, want tracked", h.VM, h.Capture)
		}
		if h.State != "resyncing" {
			t.Errorf("%s after the kill: state %q, want resyncing (its tracking had a gap)", h.VM, h.State)
		}
	}
	items, err := d.Sites.List(ctx, provider.Filter{Kind: provider.KindVM})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.State != "running" {
			t.Errorf("%s is %s after the restart", it.Ref, it.State)
		}
		var got uint64
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if got = ledgerOverHTTP(ctx, it.Address); got > atKill[it.Name] {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got <= atKill[it.Name] {
			t.Errorf("%s answers %d records, had synced %d before the kill: it does not run on its disk again", it.Name, got, atKill[it.Name])
		}
	}
	for _, vm := range []string{"app1", "app2"} {
		if _, err := d.Protector.Cut(ctx, vm, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range d.Health() {
		if h.State != "protected" {
			t.Errorf("%s after a point: state %q (%s), want protected", h.VM, h.State, h.Reason)
		}
	}
	// With the machines stopped, one more point equals the disks.
	if err := d.StopSource(ctx); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []string{"app1", "app2"} {
		res, err := d.Protector.Cut(ctx, vm, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		view := filepath.Join(dir, "check", vm)
		disks, err := d.Protector.Disks(ctx, vm, res.Point.Seq, view)
		if err != nil {
			t.Fatal(err)
		}
		for name, path := range disks {
			got, err1 := os.ReadFile(path)
			want, err2 := os.ReadFile(d.DiskPath(vm, name))
			if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
				t.Errorf("%s disk %s: point %d differs from the disk (%v %v)", vm, name, res.Point.Seq, err1, err2)
			}
		}
		if err := d.Protector.Release(ctx, view); err != nil {
			t.Error(err)
		}
	}
}

// ledgerOnDisk reads how many records a ledger disk holds, from a copy.
func ledgerOnDisk(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "ledger.img")
	if err := os.WriteFile(cp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := workload.OpenLedger(cp, workload.LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Recovery().LastSeq
}

// ledgerOverHTTP asks a ledger machine for its newest record; 0 if it does
// not answer.
func ledgerOverHTTP(ctx context.Context, addr string) uint64 {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr+":8080/records", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var r struct {
		LastSeq uint64 `json:"lastSeq"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return 0
	}
	return r.LastSeq
}
