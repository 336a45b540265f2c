package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/examples"
	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/replication"
	"github.com/standby-dr/standby/internal/spec"
	"github.com/standby-dr/standby/internal/workload"
)

type demoOpts struct {
	keep       bool
	lab        bool
	every      time.Duration
	executable string
}

func newDemoCmd(e *env) *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "The whole story on the embedded quickstart spec: protect, drill, fail over, fail back",
		Long: `Runs the embedded quickstart spec (examples/local-quickstart.yaml) on this
machine, without root, in a temporary directory: checks the recovery network
design, starts two ledger VMs in the primary site, replicates their disks,
runs a drill in the isolated test network and cleans it up, kills the primary
site, fails over to the latest recovery point and reports the recovery time
and the records lost, then reprotects and fails back with zero loss.
Nothing outside the temporary directory is touched.`,
		Example: `  go run ./cmd/standby demo
  standby demo -o json
  standby demo --keep      # keep the directory to look at replicas and logs
  sudo standby demo --lab  # the same story on real namespaces, circuits and NVAs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runDemo(cmd.Context(), e, o) },
	}
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	cmd.Flags().BoolVar(&o.lab, "lab", false, "run the sites as real networks of Linux namespaces (netlab; needs root)")
	cmd.Flags().DurationVar(&o.every, "every", 2*time.Second, "how often recovery points are cut during the demo")
	cmd.Flags().StringVar(&o.executable, "executable", "", "the standby binary the VMs run (default: this program)")
	_ = cmd.Flags().MarkHidden("executable")
	return cmd
}

// DemoResult is what the demo did and measured, for -o json.
type DemoResult struct {
	Dir        string            `json:"dir"`
	Findings   []netplan.Finding `json:"findings"`
	Topology   netplan.Topology  `json:"topology"`
	Traces     []*netplan.Trace  `json:"traces"`
	Initial    []daemon.VMHealth `json:"initialReplication"`
	Drill      *recovery.Report  `json:"drill"`
	Cleanup    *recovery.Report  `json:"drillCleanup"`
	Failover   *recovery.Report  `json:"failover"`
	Reprotect  *recovery.Report  `json:"reprotect"`
	Failback   *recovery.Report  `json:"failback"`
	Ledgers    []LedgerLoss      `json:"ledgers"`
	Seconds    float64           `json:"seconds"`
	Leftovers  int               `json:"drillLeftovers"`
	ManualAcks []string          `json:"manualSteps"`
	// Disks says what recovered machines booted from: "served" overlays
	// or "exported" copies.
	Disks string `json:"recoveredDisks"`
	// RealPaths are the probes' paths on netlab (--lab).
	RealPaths []*netlab.Trace `json:"realPaths,omitempty"`
}

// LedgerLoss is what one ledger VM wrote and what each move kept.
type LedgerLoss struct {
	VM               string `json:"vm"`
	WrittenAtKill    uint64 `json:"writtenAtKill"`
	RecoveredAfterFO uint64 `json:"recoveredAfterFailover"`
	LostInFailover   uint64 `json:"lostInFailover"`
	// RPOAtKill is the RPO when the site went dark; LostSpan how far
	// before that the first lost record was written (at most the RPO, and
	// the time to write a record).
	RPOAtKill        time.Duration `json:"rpoAtKillNanos"`
	LostSpan         time.Duration `json:"lostSpanNanos"`
	AtTargetBeforeFB uint64        `json:"atTargetBeforeFailback"`
	AfterFailback    uint64        `json:"afterFailback"`
	LostInFailback   uint64        `json:"lostInFailback"`
}

// demo narrates to w (text mode) and collects the result.
type demo struct {
	spec *spec.Spec
	e    *env
	w    io.Writer
	d    *daemon.Daemon
	res  DemoResult
}

func (dm *demo) say(format string, args ...any) {
	if dm.e.output == "text" {
		fmt.Fprintf(dm.w, format, args...)
	}
}

func runDemo(ctx context.Context, e *env, o demoOpts) error {
	start := time.Now()
	dir, err := os.MkdirTemp("", "standby-demo-")
	if err != nil {
		return fmt.Errorf("demo: make a temporary directory: %w", err)
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	data, err := examples.Files.ReadFile(examples.Quickstart)
	if err != nil {
		return fmt.Errorf("demo: read the embedded spec: %w", err)
	}
	file := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return fmt.Errorf("demo: write %s: %w", file, err)
	}
	s, err := spec.Load(file)
	if err != nil {
		return err
	}
	kind := "local"
	if o.lab {
		if os.Geteuid() != 0 {
			return badInputf("--lab builds network namespaces and needs root; run without --lab for the local provider")
		}
		kind = "netlab"
		for i := range s.Sites {
			s.Sites[i].Provider = kind
		}
	}
	exe := o.executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("demo: find this program: %w", err)
		}
	}
	dm := &demo{spec: s, e: e, w: e.stdout, res: DemoResult{Dir: dir}}
	dm.say("standby demo: %s, in %s\n", s.Name, dir)

	if err := dm.design(s); err != nil {
		return err
	}
	d, err := daemon.Open(ctx, daemon.Options{Spec: s, Dir: filepath.Join(dir, "standby"), Executable: exe, Lab: filepath.Base(dir), MinInterval: o.every, Provider: kind})
	if err != nil {
		return err
	}
	dm.d = d
	defer func() {
		if d.Lab() != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_ = d.Down(dctx)
		}
	}()
	defer func() {
		// Stop every machine the demo started, whatever happened.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if items, err := d.Sites.List(cctx, provider.Filter{Kind: provider.KindVM}); err == nil {
			for _, it := range items {
				_ = d.Sites.StopVM(cctx, it.Site, it.Name)
			}
		}
		d.Close()
	}()
	if err := dm.story(ctx, s, o); err != nil {
		return err
	}
	dm.res.Seconds = time.Since(start).Seconds()
	return e.render(dm.res, func(w io.Writer) { dm.summary(w) })
}

// design is the network part: check, plan, traces.
func (dm *demo) design(s *spec.Spec) error {
	p := netplan.Derive(s)
	dm.res.Findings = netplan.Check(p)
	if dm.res.Findings == nil {
		dm.res.Findings = []netplan.Finding{}
	}
	dm.res.Topology = p.Topology
	counts := map[string]int{}
	for _, f := range dm.res.Findings {
		counts[f.Severity]++
	}
	dm.say("\n1. The design (standby net check, plan, trace)\n")
	dm.say("   %d machines at %s fail over to %s; %s topology, %s addressing.\n", len(s.Protection.VirtualMachines), strings.Join(p.Topology.SourceSites, ","), p.Topology.TargetSite, p.Topology.Kind, p.Topology.Addressing)
	dm.say("   %s, %s: ", plural(counts["error"], "error"), plural(counts["warning"], "warning"))
	var rules []string
	for _, f := range dm.res.Findings {
		rules = append(rules, f.Rule)
	}
	dm.say("%s\n", strings.Join(rules, ", "))
	dm.say("   The runbook has %d actions; the target network is built ahead (%s), the failover itself takes %s by the book.\n", len(p.Runbook), p.Estimate.BeforeFailover, p.Estimate.Failover)
	app := netip.MustParseAddr("10.1.0.4")
	for _, st := range []string{netplan.StateSource, netplan.StateTarget} {
		t, err := p.Trace(st, "hq/client", app)
		if err != nil {
			return err
		}
		dm.res.Traces = append(dm.res.Traces, t)
		var nodes []string
		for _, h := range t.Hops {
			nodes = append(nodes, h.Node)
		}
		if n := len(t.Hops); n > 0 {
			nodes = append(nodes, t.Hops[n-1].NextHop)
		}
		dm.say("   hq/client -> %s %-7s %s\n", app, st+":", strings.Join(nodes, " > "))
	}
	return nil
}

func (dm *demo) story(ctx context.Context, s *spec.Spec, o demoOpts) error {
	d := dm.d
	dm.say("\n2. Production starts at %s: two ledger VMs append numbered records to their data disks.\n", s.Protection.VirtualMachines[0].Site)
	if err := d.StartSites(ctx); err != nil {
		return err
	}
	for _, vm := range s.Protection.VirtualMachines {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := provider.WaitCheck(wctx, d.Sites, provider.Check{From: "hq/client", HTTP: fmt.Sprintf("http://%s:8080/health", vm.NICs[0].IPAddress)}, 100*time.Millisecond)
		cancel()
		if err != nil {
			return fmt.Errorf("demo: %s did not start: %w", vm.Name, err)
		}
	}
	dm.say("   hq/client reaches app1 at 10.1.0.4 and app2 at 10.2.0.4.\n")

	dm.say("\n3. Initial replication to %s\n", s.Recovery.TargetSite)
	bar := newReplicaBar(dm.e)
	current := ""
	t0 := time.Now()
	err := d.Protect(ctx, func(vm string, done, total int64) {
		if vm != current {
			bar.finish()
			bar.start("   "+vm, total)
			current = vm
		}
		bar.progress(vm, done, total)
	})
	bar.finish()
	if err != nil {
		return err
	}
	dm.res.Initial = d.Health()
	for _, h := range dm.res.Initial {
		dm.say("   %-5s point %d, %s shipped (zeros are not sent)\n", h.VM, h.LastPoint, byteSize(h.Shipped))
	}
	dm.say("   done in %s; from now on a point every %s.\n", time.Since(t0).Round(time.Millisecond), o.every)
	if _, why := d.DiskMode(); why == "" {
		dm.say("   Capture is tracked: the daemon serves each disk to its VM through FUSE, so every write is\n   marked as it happens, a point cuts both disks of a VM at one instant and ships only what changed.\n")
	} else {
		dm.say("   Capture is scan: each point reads and hashes the disks (%s).\n", why)
	}
	pj, err := d.Provision(ctx)
	if err != nil {
		return err
	}
	if pj.Status != api.StatusSucceeded && pj.ID != "" {
		return dm.failed("provision", pj)
	}
	dm.say("   The target network is built ahead of failover (provisionBeforeFailover): %d runbook actions.\n", len(pj.Steps))
	rctx, stopReplication := context.WithCancel(ctx)
	replicated := make(chan struct{})
	go func() { d.Replicate(rctx); close(replicated) }()
	defer func() { stopReplication(); <-replicated }()
	time.Sleep(o.every + 500*time.Millisecond)

	dm.say("\n4. A drill of plan contoso-app in the isolated test network (standby drill)\n")
	dj, err := d.Planner.Drill("contoso-app")
	if err != nil {
		return err
	}
	drill, err := d.Run(ctx, dj)
	if err != nil {
		return err
	}
	dm.res.Drill = report(drill)
	if drill.Status != api.StatusSucceeded {
		return dm.failed("drill", drill)
	}
	dm.say("   test copies booted at 172.30.x.x and passed %d checks; RTO %s. Production kept running.\n", len(dm.res.Drill.Checks), dm.res.Drill.RTOText)
	cj, err := d.Planner.DrillCleanup("contoso-app", drill.ID)
	if err != nil {
		return err
	}
	cl, err := d.Run(ctx, cj)
	if err != nil {
		return err
	}
	dm.res.Cleanup = report(cl)
	if cl.Status != api.StatusSucceeded {
		return dm.failed("drill cleanup", cl)
	}
	left, err := d.Sites.List(ctx, provider.Filter{Job: drill.ID})
	if err != nil {
		return err
	}
	dm.res.Leftovers = len(left)
	dm.say("   cleanup: %d resources of the drill left.\n", len(left))

	time.Sleep(o.every + 500*time.Millisecond)
	dm.say("\n5. Disaster: the primary site %s goes dark.\n", s.Protection.VirtualMachines[0].Site)
	var vms []string
	for _, vm := range s.Protection.VirtualMachines {
		vms = append(vms, vm.Name)
	}
	if err := d.StopSource(ctx); err != nil {
		return err
	}
	// The RPO when the site went dark: the most a failover may lose.
	killedAt := time.Now()
	rpoAtKill := map[string]time.Duration{}
	for _, h := range d.Health() {
		rpoAtKill[h.VM] = time.Duration(h.RPONanos)
	}
	// What each ledger had written when its site went dark is on its own
	// disk: read it there, as the ledger would on a restart.
	written := map[string]uint64{}
	for _, vm := range s.Protection.VirtualMachines {
		l, err := workload.OpenLedger(d.DiskPath(vm.Name, "data"), workload.LedgerOptions{})
		if err != nil {
			return fmt.Errorf("demo: read the ledger disk of %s: %w", vm.Name, err)
		}
		written[vm.Name] = l.Recovery().LastSeq
		if err := l.Close(); err != nil {
			return err
		}
	}
	for _, vm := range vms {
		dm.say("   %s had written %d records.\n", vm, written[vm])
	}

	dm.say("\n6. Unplanned failover to the latest point (standby failover contoso-app)\n")
	fj, err := d.Planner.Failover("contoso-app", recovery.FailoverOptions{Point: "latest"})
	if err != nil {
		return err
	}
	fo, err := dm.runAcking(ctx, fj)
	if err != nil {
		return err
	}
	dm.res.Failover = report(fo)
	if fo.Status != api.StatusSucceeded {
		return dm.failed("failover", fo)
	}
	dm.say("   RTO %s (network steps, boot from the point, health checks, the plan's checks from hq/client).\n", dm.res.Failover.RTOText)
	dm.say("   %s\n", dm.disksNote())
	dm.realPath(ctx, "after failover")
	for _, m := range dm.res.Failover.Machines {
		r, err := dm.ledger(ctx, m.Site, m.VM)
		if err != nil {
			return err
		}
		// What the ledger recovered on start is what the point held.
		ll := LedgerLoss{VM: m.VM, WrittenAtKill: written[m.VM], RecoveredAfterFO: r.Recovered, RPOAtKill: rpoAtKill[m.VM]}
		if ll.WrittenAtKill > ll.RecoveredAfterFO {
			ll.LostInFailover = ll.WrittenAtKill - ll.RecoveredAfterFO
		}
		dm.say("   %s: point %d, %s old at the failover: %d of %d records recovered, %d lost.\n", m.VM, m.Point, m.DataLoss, ll.RecoveredAfterFO, ll.WrittenAtKill, ll.LostInFailover)
		if ll.LostInFailover > 0 {
			// The lost records are the newest: the first of them says how
			// far back the loss goes, by the ledger's own clock.
			at, err := workload.RecordTime(d.DiskPath(m.VM, "data"), ll.RecoveredAfterFO+1)
			if err != nil {
				return fmt.Errorf("demo: the first record %s lost: %w", m.VM, err)
			}
			ll.LostSpan = killedAt.Sub(at)
			dm.say("     they were written in the last %s before the site went dark; the RPO then was %s.\n", ll.LostSpan.Round(time.Millisecond), ll.RPOAtKill.Round(time.Millisecond))
		}
		dm.res.Ledgers = append(dm.res.Ledgers, ll)
	}

	dm.say("\n7. Commit and reprotect: replicate back, sending only blocks whose hashes differ.\n")
	cm, err := d.Planner.Commit("contoso-app", fo.ID)
	if err != nil {
		return err
	}
	if j, err := d.Run(ctx, cm); err != nil || j.Status != api.StatusSucceeded {
		return dm.jobErr("commit", j, err)
	}
	rp, err := d.Planner.Reprotect("contoso-app")
	if err != nil {
		return err
	}
	rj, err := d.Run(ctx, rp)
	if err != nil || rj.Status != api.StatusSucceeded {
		return dm.jobErr("reprotect", rj, err)
	}
	dm.res.Reprotect = report(rj)
	for _, st := range rj.Steps {
		var rs recovery.ReverseStats
		if json.Unmarshal(st.Output, &rs) == nil {
			why := ""
			if rs.Blocks < rs.InAll {
				why = " (tracking says the rest changed on neither side)"
			}
			dm.say("   %s: compared %d of %d blocks%s; %d differed, %s sent.\n", st.Resource, rs.Blocks, rs.InAll, why, rs.Differ, byteSize(rs.BytesSent))
		}
	}

	time.Sleep(time.Second)
	dm.say("\n8. Planned failback (standby failback contoso-app)\n")
	for i := range dm.res.Ledgers {
		r, err := dm.ledger(ctx, s.Recovery.TargetSite, dm.res.Ledgers[i].VM)
		if err != nil {
			return err
		}
		dm.res.Ledgers[i].AtTargetBeforeFB = r.LastSeq
	}
	fbj, err := d.Planner.Failback("contoso-app")
	if err != nil {
		return err
	}
	fb, err := dm.runAcking(ctx, fbj)
	if err != nil {
		return err
	}
	dm.res.Failback = report(fb)
	if fb.Status != api.StatusSucceeded {
		return dm.failed("failback", fb)
	}
	for i := range dm.res.Ledgers {
		l := &dm.res.Ledgers[i]
		vm := s.VM(l.VM)
		r, err := dm.ledger(ctx, vm.Site, l.VM)
		if err != nil {
			return err
		}
		// What the ledger recovered on start is what the move kept.
		l.AfterFailback = r.Recovered
		if l.AtTargetBeforeFB > l.AfterFailback {
			l.LostInFailback = l.AtTargetBeforeFB - l.AfterFailback
		}
		dm.say("   %s: back at %s with %d records, %d lost.\n", l.VM, vm.Site, l.AfterFailback, l.LostInFailback)
	}
	dm.say("   RTO %s; replication from %s resumed.\n", dm.res.Failback.RTOText, s.Protection.VirtualMachines[0].Site)
	dm.realPath(ctx, "after failback")
	return nil
}

// realPath prints the path real probes take from hq/client to app1 when the
// sites are namespaces.
func (dm *demo) realPath(ctx context.Context, when string) {
	lab := dm.d.Lab()
	if lab == nil {
		return
	}
	tr, err := lab.Trace(ctx, "hq/client", netip.MustParseAddr("10.1.0.4"), netlab.TraceOptions{})
	if err != nil {
		dm.say("   real probes %s: %v\n", when, err)
		return
	}
	dm.res.RealPaths = append(dm.res.RealPaths, tr)
	dm.say("   real probes %s: hq/client > %s (%s)\n", when, strings.Join(tr.Nodes(), " > "), tr.Result)
}

// runAcking runs a job, acknowledging its manual steps as an operator
// would, and tells which.
func (dm *demo) runAcking(ctx context.Context, j recovery.Job) (recovery.Job, error) {
	got, err := dm.d.Run(ctx, j)
	for err == nil && got.Status == api.StatusWaiting {
		for _, st := range got.Steps {
			if st.Status == api.StatusWaiting {
				dm.res.ManualAcks = append(dm.res.ManualAcks, st.Detail)
				dm.say("   manual step, acknowledged for the demo: %s\n", st.Detail)
			}
		}
		got, err = dm.d.Resume(ctx, got.ID, true)
	}
	return got, err
}

func report(j recovery.Job) *recovery.Report {
	r := recovery.BuildReport(j)
	return &r
}

func (dm *demo) jobErr(what string, j recovery.Job, err error) error {
	if err != nil {
		return fmt.Errorf("demo: %s: %w", what, err)
	}
	return dm.failed(what, j)
}

func (dm *demo) failed(what string, j recovery.Job) error {
	var b strings.Builder
	for _, s := range j.Steps {
		if s.Status == api.StatusFailed {
			fmt.Fprintf(&b, "\n  step %s: %s", s.ID, s.Error)
		}
	}
	return fmt.Errorf("demo: the %s job %s ended %s:%s", what, j.ID, j.Status, b.String())
}

// ledgerRecords is the ledger's /records answer, as much as the demo reads.
type ledgerRecords struct {
	LastSeq   uint64 `json:"lastSeq"`
	Recovered uint64
	Rec       struct {
		LastSeq uint64 `json:"lastSeq"`
	} `json:"recovered"`
}

// ledger asks a ledger VM how many records it holds, at the address the
// site gives it.
func (dm *demo) ledger(ctx context.Context, site, vm string) (ledgerRecords, error) {
	if lab := dm.d.Lab(); lab != nil {
		// On namespaces, ask from the on-premises client, the real way.
		v := dm.spec.VM(vm)
		body, err := lab.Get(ctx, "hq/client", fmt.Sprintf("http://%s:8080/records", v.NICs[0].IPAddress))
		if err != nil {
			return ledgerRecords{}, fmt.Errorf("demo: ask %s for its records: %w", vm, err)
		}
		var r ledgerRecords
		if err := json.Unmarshal(body, &r); err != nil {
			return ledgerRecords{}, fmt.Errorf("demo: records of %s: %w", vm, err)
		}
		r.Recovered = r.Rec.LastSeq
		return r, nil
	}
	items, err := dm.d.Sites.List(ctx, provider.Filter{Site: site, Kind: provider.KindVM})
	if err != nil {
		return ledgerRecords{}, err
	}
	for _, it := range items {
		if it.Name != vm || it.Address == "" {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+it.Address+":8080/records", nil)
		if err != nil {
			return ledgerRecords{}, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return ledgerRecords{}, fmt.Errorf("demo: ask %s/%s for its records: %w", site, vm, err)
		}
		defer resp.Body.Close()
		var r ledgerRecords
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return ledgerRecords{}, fmt.Errorf("demo: records of %s/%s: %w", site, vm, err)
		}
		r.Recovered = r.Rec.LastSeq
		return r, nil
	}
	return ledgerRecords{}, fmt.Errorf("demo: no running machine %s at %s", vm, site)
}

func (dm *demo) summary(w io.Writer) {
	r := dm.res
	fmt.Fprintf(w, "\nSummary\n")
	fmt.Fprintf(w, "  %-22s %-10s %s\n", "operation", "RTO", "data loss")
	if r.Drill != nil {
		fmt.Fprintf(w, "  %-22s %-10s %s\n", "drill", r.Drill.RTOText, "none (production untouched)")
	}
	if r.Failover != nil {
		var loss []string
		for _, l := range r.Ledgers {
			loss = append(loss, fmt.Sprintf("%s %d records", l.VM, l.LostInFailover))
		}
		fmt.Fprintf(w, "  %-22s %-10s %s\n", "unplanned failover", r.Failover.RTOText, strings.Join(loss, ", "))
	}
	if r.Failback != nil {
		var loss []string
		for _, l := range r.Ledgers {
			loss = append(loss, fmt.Sprintf("%s %d records", l.VM, l.LostInFailback))
		}
		fmt.Fprintf(w, "  %-22s %-10s %s\n", "planned failback", r.Failback.RTOText, strings.Join(loss, ", "))
	}
	fmt.Fprintf(w, "\nThe whole story took %.1fs. The spec is examples/%s; `standby net plan -f` on it prints the runbook.\n", r.Seconds, examples.Quickstart)
}

// disksNote says what the recovered machines booted from.
func (dm *demo) disksNote() string {
	mode, why := dm.d.DiskMode()
	dm.res.Disks = string(mode)
	if mode == replication.DisksServed {
		return "The machines booted at once from writable overlays on their point, served through FUSE: no disk was copied, and their writes are tracked for reprotect."
	}
	return "The machines booted from copies of their point, exported before boot (" + why + ")."
}
