package recovery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/local"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/spec"
)

var standbyBin string

func buildStandby(t *testing.T) string {
	t.Helper()
	if standbyBin != "" {
		return standbyBin
	}
	dir, err := os.MkdirTemp("", "standby-bin-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "standby")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/standby")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build standby: %v\n%s", err, out)
	}
	standbyBin = bin
	return bin
}

// snapProtection is a Protection over whole-file snapshots: a point is a
// copy of every disk file of a VM. It stands in for replication here; the
// orchestration under test is the same.
type snapProtection struct {
	mu     sync.Mutex
	dir    string
	disks  map[string][]provider.Disk // live source disks per VM
	points map[string][]recovery.Point
	pins   map[string]map[string]uint64 // vm -> job -> seq
	fenced map[string]bool
	clock  clock.Clock

	recovered map[string][]provider.Disk
}

func (p *snapProtection) snapshot(t *testing.T, vm string) recovery.Point {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	seq := uint64(len(p.points[vm]) + 1)
	for _, d := range p.disks[vm] {
		copyFile(t, d.Path, filepath.Join(p.dir, vm, fmt.Sprint(seq), d.Name))
	}
	pt := recovery.Point{Seq: seq, Time: p.clock.Now(), Kind: "crash"}
	p.points[vm] = append(p.points[vm], pt)
	return pt
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func (p *snapProtection) Points(ctx context.Context, vm string) ([]recovery.Point, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]recovery.Point(nil), p.points[vm]...), nil
}

func (p *snapProtection) Pin(ctx context.Context, vm string, seq uint64, job string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pins[vm] == nil {
		p.pins[vm] = map[string]uint64{}
	}
	p.pins[vm][job] = seq
	return nil
}

func (p *snapProtection) Unpin(ctx context.Context, vm, job string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pins[vm], job)
	return nil
}

func (p *snapProtection) Fence(ctx context.Context, vm string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fenced[vm] = true
	return nil
}

func (p *snapProtection) Final(ctx context.Context, vm string) (recovery.Point, error) {
	return recovery.Point{}, fmt.Errorf("not used")
}

func (p *snapProtection) Disks(ctx context.Context, vm string, seq uint64, dir string) ([]provider.Disk, error) {
	var out []provider.Disk
	for _, d := range p.disks[vm] {
		to := filepath.Join(dir, d.Name+".img")
		if _, err := os.Stat(to); err != nil {
			b, err := os.ReadFile(filepath.Join(p.dir, vm, fmt.Sprint(seq), d.Name))
			if err != nil {
				return nil, err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(to, b, 0o644); err != nil {
				return nil, err
			}
		}
		out = append(out, provider.Disk{Name: d.Name, Path: to})
	}
	return out, nil
}

func (p *snapProtection) Commit(ctx context.Context, vm, job string) error {
	return p.Unpin(ctx, vm, job)
}

type records struct {
	Count uint64 `json:"count"`
	Last  uint64 `json:"lastSeq"`
}

func ledgerRecords(t *testing.T, lp *local.Provider, site, vm string) records {
	t.Helper()
	items, err := lp.List(context.Background(), provider.Filter{Site: site, Kind: provider.KindVM})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Name == vm {
			resp, err := http.Get("http://" + it.Address + ":8080/records")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var r records
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("no machine %s at %s", vm, site)
	return records{}
}

// A drill, its cleanup and an unplanned failover of the quickstart plan on
// the local provider: real ledgers, real checks, the runbook's network steps.
func TestDrillAndFailoverOnLocal(t *testing.T) {
	bin := buildStandby(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := spec.Load("../../examples/local-quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Small disks keep the test quick.
	for i := range s.Protection.VirtualMachines {
		for j := range s.Protection.VirtualMachines[i].Disks {
			s.Protection.VirtualMachines[i].Disks[j].Size = 4 << 20
		}
	}
	dir := t.TempDir()
	lp, err := local.New(local.Options{Dir: filepath.Join(dir, "local"), Executable: bin, Lab: dir, StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	defer provider.Cleanup(context.Background(), lp, "site")
	pl := recovery.NewPlanner(s)

	// The source site as it runs today.
	for _, r := range provider.Resources(s.Network("eastasia")) {
		if err := lp.CreateNetwork(ctx, "site", r); err != nil {
			t.Fatalf("create %+v: %v", r, err)
		}
	}
	for _, o := range s.OnPremises {
		for _, h := range o.Hosts {
			h := h
			if err := lp.CreateNetwork(ctx, "site", provider.Resource{Site: o.Name, Host: &h}); err != nil {
				t.Fatal(err)
			}
		}
	}
	prot := &snapProtection{dir: filepath.Join(dir, "points"), disks: map[string][]provider.Disk{}, points: map[string][]recovery.Point{}, pins: map[string]map[string]uint64{}, fenced: map[string]bool{}, clock: clock.Real{}}
	for _, vm := range s.Protection.VirtualMachines {
		var disks []provider.Disk
		for _, d := range vm.Disks {
			path := filepath.Join(dir, "source", vm.Name, d.Name+".img")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, int64(d.Size)); err != nil {
				t.Fatal(err)
			}
			disks = append(disks, provider.Disk{Name: d.Name, Path: path})
		}
		prot.disks[vm.Name] = disks
		boot := *vm.Boot
		boot.Command = append([]string{bin}, boot.Command[1:]...)
		if err := lp.StartVM(ctx, "site", provider.VM{Site: vm.Site, Name: vm.Name, NICs: vm.NICs, Disks: disks, Boot: boot}); err != nil {
			t.Fatal(err)
		}
		if _, err := provider.WaitCheck(ctx, lp, provider.Check{From: "hq/client", HTTP: fmt.Sprintf("http://%s:8080/health", vm.NICs[0].IPAddress)}, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, vm := range s.Protection.VirtualMachines {
		prot.snapshot(t, vm.Name)
	}
	// The ledgers go on writing after the point: an unplanned failover
	// loses what came after it.
	time.Sleep(300 * time.Millisecond)

	store, _ := openStore(t, filepath.Join(dir, "state.db"), clock.Real{})
	runner := &recovery.Runner{Sites: lp, Protection: prot, Dir: filepath.Join(dir, "recovered"), Executable: bin}
	d := recovery.New(store, runner, recovery.Options{Report: recovery.ReportJSON})

	runJob := func(j recovery.Job, op string) recovery.Job {
		t.Helper()
		j = recovery.Tag(j, recovery.NewJobID(clock.Real{}, op))
		if _, err := d.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		got, err := d.Run(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	describe := func(j recovery.Job) string {
		var b strings.Builder
		for _, s := range j.Steps {
			fmt.Fprintf(&b, "  %-60s %-9s %s\n", s.ID, s.Status, s.Error)
		}
		return b.String()
	}

	// Drill.
	dj, err := pl.Drill("contoso-app")
	if err != nil {
		t.Fatal(err)
	}
	drill := runJob(dj, "drill")
	if drill.Status != api.StatusSucceeded {
		t.Fatalf("drill %s:\n%s", drill.Status, describe(drill))
	}
	var rep recovery.Report
	if err := json.Unmarshal(drill.Report, &rep); err != nil || len(rep.Machines) != 2 || rep.RTO <= 0 {
		t.Fatalf("drill report %s", drill.Report)
	}
	// Production kept answering during the drill.
	if _, err := lp.Check(ctx, provider.Check{From: "hq/client", HTTP: "http://10.1.0.4:8080/health"}); err != nil {
		t.Fatal(err)
	}
	cj, err := pl.DrillCleanup("contoso-app", drill.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cl := runJob(cj, "cleanup"); cl.Status != api.StatusSucceeded {
		t.Fatalf("cleanup %s:\n%s", cl.Status, describe(cl))
	}
	if left, _ := lp.List(ctx, provider.Filter{Job: drill.ID}); len(left) != 0 {
		t.Fatalf("the drill left %v", left)
	}

	// The primary site dies; fail over unplanned to the latest point.
	before := map[string]records{}
	for _, vm := range []string{"app1", "app2"} {
		before[vm] = ledgerRecords(t, lp, "eastasia", vm)
		if err := lp.StopVM(ctx, "eastasia", vm); err != nil {
			t.Fatal(err)
		}
	}
	fj, err := pl.Failover("contoso-app", recovery.FailoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fj = recovery.Tag(fj, recovery.NewJobID(clock.Real{}, "failover"))
	if _, err := d.Create(ctx, fj); err != nil {
		t.Fatal(err)
	}
	fo, err := d.Run(ctx, fj.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The plan's manual step waits for an operator.
	if fo.Status != api.StatusWaiting {
		t.Fatalf("failover %s, want waiting on the manual step:\n%s", fo.Status, describe(fo))
	}
	for fo.Status == api.StatusWaiting {
		if fo, err = d.Resume(ctx, fo.ID, api.ResumeRequest{Ack: true}); err != nil {
			t.Fatal(err)
		}
	}
	if fo.Status != api.StatusSucceeded {
		t.Fatalf("failover %s:\n%s", fo.Status, describe(fo))
	}
	if !prot.fenced["app1"] || !prot.fenced["app2"] {
		t.Error("an unplanned failover fences replication of every VM")
	}
	var frep recovery.Report
	if err := json.Unmarshal(fo.Report, &frep); err != nil || frep.RTO <= 0 || len(frep.Machines) != 2 {
		t.Fatalf("failover report %s", fo.Report)
	}
	for _, c := range frep.Checks {
		if c.Status != api.StatusSucceeded {
			t.Errorf("check %s: %s", c.ID, c.Status)
		}
	}
	// The recovered ledgers answer at their old addresses, from on-premises,
	// and hold what the point held: the loss is measured, not guessed.
	var lines []string
	for _, vm := range []string{"app1", "app2"} {
		after := ledgerRecords(t, lp, "southeastasia", vm)
		if after.Last > before[vm].Last || after.Last == 0 {
			t.Errorf("%s recovered %d records of the %d it had written", vm, after.Last, before[vm].Last)
		}
		lines = append(lines, fmt.Sprintf("%s: %d records before, %d recovered", vm, before[vm].Last, after.Last))
	}
	sort.Strings(lines)
	t.Logf("RTO %s; %s", frep.RTOText, strings.Join(lines, "; "))
	// Every step ran once: running the finished job again does nothing.
	again, err := d.Resume(ctx, fo.ID, api.ResumeRequest{})
	if err != nil || again.Status != api.StatusSucceeded {
		t.Fatalf("second resume: %v %s", err, again.Status)
	}

	// Commit, reprotect, and fail back with zero loss.
	cm, err := pl.Commit("contoso-app", fo.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j := runJob(cm, "commit"); j.Status != api.StatusSucceeded {
		t.Fatalf("commit %s:\n%s", j.Status, describe(j))
	}
	rp, err := pl.Reprotect("contoso-app")
	if err != nil {
		t.Fatal(err)
	}
	if j := runJob(rp, "reprotect"); j.Status != api.StatusSucceeded {
		t.Fatalf("reprotect %s:\n%s", j.Status, describe(j))
	}
	time.Sleep(300 * time.Millisecond)
	atTarget := map[string]records{}
	for _, vm := range []string{"app1", "app2"} {
		atTarget[vm] = ledgerRecords(t, lp, "southeastasia", vm)
	}
	fb, err := pl.Failback("contoso-app")
	if err != nil {
		t.Fatal(err)
	}
	fb = recovery.Tag(fb, recovery.NewJobID(clock.Real{}, "failback"))
	if _, err := d.Create(ctx, fb); err != nil {
		t.Fatal(err)
	}
	back, err := d.Run(ctx, fb.ID)
	for err == nil && back.Status == api.StatusWaiting {
		back, err = d.Resume(ctx, fb.ID, api.ResumeRequest{Ack: true})
	}
	if err != nil || back.Status != api.StatusSucceeded {
		t.Fatalf("failback %v %s:\n%s", err, back.Status, describe(back))
	}
	for _, vm := range []string{"app1", "app2"} {
		home := ledgerRecords(t, lp, "eastasia", vm)
		if home.Last < atTarget[vm].Last {
			t.Errorf("%s lost records in the planned failback: %d at the target before it, %d back home", vm, atTarget[vm].Last, home.Last)
		}
	}
	if prot.fenced["app1"] || prot.fenced["app2"] {
		t.Error("after failback the source replicates again")
	}
	_ = provider.Cleanup(ctx, lp, fo.ID)
	_ = provider.Cleanup(ctx, lp, fb.ID)
}

func (p *snapProtection) Recovered(ctx context.Context, vm string, disks []provider.Disk) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recovered == nil {
		p.recovered = map[string][]provider.Disk{}
	}
	p.recovered[vm] = disks
	return nil
}

func (p *snapProtection) Reverse(ctx context.Context, vm string) (recovery.ReverseStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var st recovery.ReverseStats
	for i, d := range p.recovered[vm] {
		b, err := os.ReadFile(d.Path)
		if err != nil {
			return st, err
		}
		if err := os.WriteFile(p.disks[vm][i].Path, b, 0o644); err != nil {
			return st, err
		}
		st.BytesSent += int64(len(b))
	}
	return st, nil
}

func (p *snapProtection) SourceDisks(ctx context.Context, vm string) ([]provider.Disk, error) {
	return p.disks[vm], nil
}

func (p *snapProtection) RecoveredDisks(ctx context.Context, vm string) ([]provider.Disk, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.recovered[vm], nil
}

func (p *snapProtection) Release(ctx context.Context, dir string) error { return nil }

func (p *snapProtection) Resume(ctx context.Context, vm string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fenced[vm] = false
	return nil
}
