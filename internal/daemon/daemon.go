package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/local"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/replication"
	"github.com/standby-dr/standby/internal/spec"
	"github.com/standby-dr/standby/internal/state"
)

// SiteJob tags what the daemon builds of the sites as they run today (the
// source networks, on-premises hosts and source machines), as opposed to
// what recovery jobs make.
const SiteJob = "site"

// Options configure a Daemon.
type Options struct {
	Spec *spec.Spec
	// Dir holds everything: state.db, the provider's state, the source
	// disks of local sites, the replicas and the recovered disks.
	Dir string
	// Executable runs a boot command's "standby".
	Executable string
	Clock      clock.Clock
	// Lab salts the local provider's loopback addresses.
	Lab string
	// MinInterval bounds how often points are cut, whatever the policy
	// says (0: the policy's crashConsistentFrequency, at least 1s).
	MinInterval time.Duration
	// Provider is local or netlab; empty: what the spec's sites say (they
	// must all say the same).
	Provider string
}

// Daemon is one running standby: it owns the state, protects the spec's
// VMs and runs recovery jobs.
type Daemon struct {
	o         Options
	clk       clock.Clock
	db        *state.DB
	Sites     provider.Provider
	closeSite func() error
	Protector *replication.Protector
	Driver    *recovery.Driver
	Planner   *recovery.Planner
	Runner    *recovery.Runner

	// lab is the netlab provider when the sites are namespaces.
	lab *netlab.Provider

	// diskNote says why recovered machines get exported copies.
	diskNote string

	mu     sync.Mutex
	health map[string]*VMHealth
}

// LabName names the netlab lab of a daemon: the spec's name and its
// directory, so that two daemons never share namespaces.
func LabName(s *spec.Spec, dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return s.Name + "-" + hex.EncodeToString(sum[:3])
}

// Lab returns the netlab provider, or nil for local sites.
func (d *Daemon) Lab() *netlab.Provider { return d.lab }

// Down removes a netlab daemon's lab: every namespace and machine of it.
func (d *Daemon) Down(ctx context.Context) error {
	if d.lab == nil {
		return nil
	}
	_, err := netlab.Down(ctx, d.lab.Lab(), d.lab.Dir(), 5*time.Second)
	return err
}

// VMHealth is a protected VM's replication state.
type VMHealth = api.VMStatus

// Open opens (or creates) a daemon's directory. Only the local provider is
// wired for now.
func Open(ctx context.Context, o Options) (*Daemon, error) {
	if o.Spec == nil || o.Dir == "" {
		return nil, errors.New("daemon: a spec and a directory are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Provider == "" {
		for _, st := range o.Spec.Sites {
			if o.Provider != "" && st.Provider != o.Provider {
				return nil, fmt.Errorf("daemon: site %s uses provider %s, site %s %s; one daemon runs sites of one provider", o.Spec.Sites[0].Name, o.Provider, st.Name, st.Provider)
			}
			o.Provider = st.Provider
		}
	}
	if o.Provider != "local" && o.Provider != "netlab" {
		return nil, fmt.Errorf("daemon: provider %q: this daemon runs local and netlab sites", o.Provider)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d := &Daemon{o: o, clk: o.Clock, health: map[string]*VMHealth{}}
	db, err := state.Open(ctx, filepath.Join(o.Dir, "state.db"), o.Clock)
	if err != nil {
		return nil, err
	}
	d.db = db
	if o.Provider == "netlab" {
		no := netlab.ForSpec(o.Spec)
		// The lab's state lives where standby lab finds it by name, and, like
		// the namespaces, does not outlive a reboot.
		no.Lab = LabName(o.Spec, o.Dir)
		no.Executable, no.StopGrace, no.Clock = o.Executable, 5*time.Second, o.Clock
		np, err := netlab.New(no)
		if err != nil {
			db.Close()
			return nil, err
		}
		d.Sites, d.closeSite = np, np.Close
		d.lab = np
	} else {
		lp, err := local.New(local.Options{Dir: filepath.Join(o.Dir, "sites"), Executable: o.Executable, Lab: o.Lab, StopGrace: 5 * time.Second, Clock: o.Clock})
		if err != nil {
			db.Close()
			return nil, err
		}
		d.Sites, d.closeSite = lp, lp.Close
	}
	d.Protector = replication.NewProtector(filepath.Join(o.Dir, "replicas"), o.Clock)
	// Recovered machines boot from overlays served through FUSE; where
	// FUSE cannot be used, from exported copies (a failover then waits for
	// the copy), said in the status.
	if err := capture.CanServe(); err != nil {
		d.Protector.SetDiskMode(replication.DisksExported)
		d.diskNote = err.Error()
	}
	d.Planner = recovery.NewPlanner(o.Spec)
	d.Runner = &recovery.Runner{Sites: d.Sites, Protection: Protection{P: d.Protector}, Dir: filepath.Join(o.Dir, "recovered"), Clock: o.Clock, Executable: o.Executable,
		Records: ledgerRecords{spec: o.Spec, p: d.Protector}}
	d.Driver = recovery.New(JobStore{DB: db}, d.Runner, recovery.Options{Clock: o.Clock, Report: recovery.ReportJSON, Context: ctx})
	return d, nil
}

// Close stops nothing that runs (machines keep running; a new daemon
// adopts them) but releases the directory.
func (d *Daemon) Close() error {
	return errors.Join(d.Protector.Close(), d.closeSite(), d.db.Close())
}

// DiskPath is where a local source VM's disk lives: the file itself,
// which a tracked VM's machine reaches through ServedPath.
func (d *Daemon) DiskPath(vm, disk string) string {
	return filepath.Join(d.o.Dir, "disks", vm, disk+".img")
}

// ServedPath is where a tracked VM's disk is served to its machine.
func (d *Daemon) ServedPath(vm, disk string) string {
	return filepath.Join(d.o.Dir, "disks", vm, "served", disk+".img")
}

// CaptureOf is how the daemon captures vm's changes: its policy's mode,
// except that tracked falls back to scan where FUSE cannot be used (said in
// the VM's status).
func (d *Daemon) CaptureOf(vm *spec.VirtualMachine) string {
	if d.o.Spec.PolicyOf(vm).Capture == spec.CaptureTracked && d.diskNote == "" {
		return spec.CaptureTracked
	}
	return spec.CaptureScan
}

// machine is what the Protector protects of vm.
func (d *Daemon) machine(vm *spec.VirtualMachine) replication.Machine {
	pol := d.o.Spec.PolicyOf(vm)
	m := replication.Machine{Name: vm.Name, Threads: pol.UploadThreadsPerVM, BlockSize: int64(pol.BlockSize),
		Retention: replica.Retention{Window: pol.RecoveryPointRetention.Duration},
		Capture:   d.CaptureOf(vm), Policy: *pol, Quiesce: vm.Quiesce}
	for _, disk := range vm.Disks {
		sd := replication.SourceDisk{Name: disk.Name, Source: d.DiskPath(vm.Name, disk.Name)}
		if m.Capture == spec.CaptureTracked {
			sd.Served = d.ServedPath(vm.Name, disk.Name)
		}
		m.Disks = append(m.Disks, sd)
	}
	return m
}

// StartSites builds the source sites as they run today: their networks,
// the on-premises hosts, the protected machines on sparse disk files.
func (d *Daemon) StartSites(ctx context.Context) error {
	target := d.o.Spec.Recovery.TargetSite
	for i := range d.o.Spec.Networks {
		n := &d.o.Spec.Networks[i]
		if d.lab != nil {
			// One rebuild of the namespaces for the whole site.
			if err := d.lab.Apply(ctx, SiteJob, provider.Resources(n)...); err != nil {
				return fmt.Errorf("daemon: build site %s: %w", n.Site, err)
			}
			continue
		}
		for _, r := range provider.Resources(n) {
			if err := d.Sites.CreateNetwork(ctx, SiteJob, r); err != nil {
				return fmt.Errorf("daemon: build site %s: %w", n.Site, err)
			}
		}
	}
	for _, o := range d.o.Spec.OnPremises {
		for _, h := range o.Hosts {
			h := h
			if err := d.Sites.CreateNetwork(ctx, SiteJob, provider.Resource{Site: o.Name, Host: &h}); err != nil {
				return fmt.Errorf("daemon: on-premises host %s/%s: %w", o.Name, h.Name, err)
			}
		}
	}
	type source struct {
		vm    spec.VirtualMachine
		disks []provider.Disk
	}
	var sources []source
	for _, vm := range d.o.Spec.Protection.VirtualMachines {
		if vm.Site == target {
			continue
		}
		disks, err := d.sourceDisks(vm)
		if err != nil {
			return err
		}
		sources = append(sources, source{vm, disks})
	}
	// Machines that ran on disks an earlier daemon served hold dead files:
	// they start again once, on the disks served now.
	if err := d.restartOnReserved(ctx); err != nil {
		return err
	}
	for _, src := range sources {
		if err := d.startSource(ctx, src.vm, src.disks); err != nil {
			return err
		}
	}
	return nil
}

// sourceDisks makes a source VM's disk files and returns where its machine
// reaches them: the files, or with tracked capture the paths the Protector
// serves them at (served from now on).
func (d *Daemon) sourceDisks(vm spec.VirtualMachine) ([]provider.Disk, error) {
	var disks []provider.Disk
	for _, disk := range vm.Disks {
		path := d.DiskPath(vm.Name, disk.Name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if _, err := os.Stat(path); err != nil {
			f, err := os.Create(path)
			if err != nil {
				return nil, fmt.Errorf("daemon: disk %s of %s: %w", disk.Name, vm.Name, err)
			}
			err = f.Truncate(int64(disk.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("daemon: disk %s of %s: %w", disk.Name, vm.Name, err)
			}
		}
		disks = append(disks, provider.Disk{Name: disk.Name, Path: path})
	}
	if d.CaptureOf(&vm) == spec.CaptureTracked {
		// The machine runs on its disks as served, every write tracked:
		// they are served before it boots.
		if err := d.Protector.Add(d.machine(&vm)); err != nil {
			return nil, err
		}
		for i := range disks {
			disks[i].Path = d.ServedPath(vm.Name, disks[i].Name)
		}
	}
	return disks, nil
}

// startSource starts a source VM's machine on its disks; one that runs
// already stays as it is.
func (d *Daemon) startSource(ctx context.Context, vm spec.VirtualMachine, disks []provider.Disk) error {
	if vm.Boot == nil {
		return nil
	}
	boot := *vm.Boot
	if len(boot.Command) > 0 && boot.Command[0] == "standby" && d.o.Executable != "" {
		boot.Command = append([]string{d.o.Executable}, boot.Command[1:]...)
	}
	if err := d.Sites.StartVM(ctx, SiteJob, provider.VM{Site: vm.Site, Name: vm.Name, NICs: vm.NICs, Disks: disks, Boot: boot}); err != nil {
		return fmt.Errorf("daemon: start %s at %s: %w", vm.Name, vm.Site, err)
	}
	return nil
}

// Provision builds the before-failover part of the runbook when the spec
// asks for it (provisionBeforeFailover, the default). It is idempotent; a
// daemon runs it at every start and it costs nothing once done.
func (d *Daemon) Provision(ctx context.Context) (recovery.Job, error) {
	if !d.o.Spec.Recovery.NetworkMapping.Connectivity.Provision() {
		return recovery.Job{}, nil
	}
	j, err := d.Planner.Provision()
	if err != nil || len(j.Steps) == 0 {
		return recovery.Job{}, err
	}
	return d.Run(ctx, j)
}

// StopSource stops the source machines of the protected VMs: the primary
// site goes dark.
func (d *Daemon) StopSource(ctx context.Context) error {
	var errs []error
	for _, vm := range d.o.Spec.Protection.VirtualMachines {
		errs = append(errs, d.Sites.StopVM(ctx, vm.Site, vm.Name))
	}
	return errors.Join(errs...)
}

// Protect starts protecting every VM and cuts its first point (the initial
// replication). progress hears each VM's bytes done.
func (d *Daemon) Protect(ctx context.Context, progress func(vm string, done, total int64)) error {
	for _, vm := range d.o.Spec.Protection.VirtualMachines {
		if err := d.Protector.Add(d.machine(&vm)); err != nil {
			return err
		}
		d.setHealth(vm.Name, func(h *VMHealth) { h.State = "initial-sync" })
		var cb func(done, total int64)
		if progress != nil {
			name := vm.Name
			cb = func(done, total int64) { progress(name, done, total) }
		}
		if pts, _ := d.Protector.Points(ctx, vm.Name); len(pts) > 0 {
			last := pts[len(pts)-1]
			d.observe(vm.Name, replication.CutResult{Point: last, SyncedAt: last.Time})
			continue
		}
		res, err := d.Protector.Cut(ctx, vm.Name, "", cb)
		if err != nil {
			d.setHealth(vm.Name, func(h *VMHealth) { h.State, h.Reason = "error", err.Error() })
			return err
		}
		d.observe(vm.Name, res)
	}
	return d.restartOnReserved(ctx)
}

// groupSize counts the protected VMs of a consistency group.
func (d *Daemon) groupSize(g string) int {
	n := 0
	for _, vm := range d.o.Spec.Protection.VirtualMachines {
		if vm.ConsistencyGroup == g {
			n++
		}
	}
	return n
}

// DiskMode says how recovered machines get their disks, and why when they
// are exported copies.
func (d *Daemon) DiskMode() (replication.DiskMode, string) {
	return d.Protector.DiskMode(), d.diskNote
}

// restartOnReserved starts again, once, the machines that ran on disks an
// earlier daemon served (overlays, tracked source disks): their open files
// died with it. Each starts from its own definition, and opens its disks
// anew, now served by this daemon. Writes it had synced are kept; others
// are lost, as in a power cut.
func (d *Daemon) restartOnReserved(ctx context.Context) error {
	reserved := map[string]bool{}
	for _, r := range d.Protector.TakeReserved() {
		reserved[r.Path] = true
	}
	def, ok := d.Sites.(provider.Definer)
	if len(reserved) == 0 || !ok {
		return nil
	}
	items, err := d.Sites.List(ctx, provider.Filter{Kind: provider.KindVM})
	if err != nil {
		return err
	}
	var errs []error
	for _, it := range items {
		vm, job, ok, err := def.Machine(ctx, it.Site, it.Name)
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		if !slices.ContainsFunc(vm.Disks, func(dk provider.Disk) bool { return reserved[dk.Path] }) {
			continue
		}
		if err := d.Sites.StopVM(ctx, vm.Site, vm.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := d.Sites.StartVM(ctx, job, vm); err != nil {
			errs = append(errs, fmt.Errorf("daemon: start %s/%s again on its served disks: %w", vm.Site, vm.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Daemon) setHealth(vm string, f func(*VMHealth)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.health[vm]
	if h == nil {
		h = &VMHealth{VM: vm}
		d.health[vm] = h
	}
	f(h)
}

func (d *Daemon) observe(vm string, res replication.CutResult) {
	d.setHealth(vm, func(h *VMHealth) {
		h.State, h.Reason, h.LastPoint, h.LastTime = "protected", "", res.Point.Seq, res.Point.Time
		h.SyncedAt = res.SyncedAt
		h.Shipped += res.BytesShipped
	})
}

// Health returns every VM's replication state, RPO computed now.
func (d *Daemon) Health() []VMHealth {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clk.Now()
	var out []VMHealth
	for _, h := range d.health {
		c := *h
		vm := d.o.Spec.VM(c.VM)
		if vm != nil {
			c.Capture = d.CaptureOf(vm)
			if c.Capture == spec.CaptureScan && d.o.Spec.PolicyOf(vm).Capture == spec.CaptureTracked {
				c.Capture += " (" + d.diskNote + ")"
			}
			if g := vm.ConsistencyGroup; g != "" && c.Reason == "" && d.groupSize(g) > 1 {
				c.Reason = "consistencyGroup " + g + ": standby up cuts each VM of it on its own; standby agent cuts them at one instant"
			}
		}
		// A tracked VM's disks tell a resync or an initial sync, and how
		// far it has come.
		if ts, ok := d.Protector.TrackedStatus(c.VM); ok && c.State != "error" {
			var p api.Progress
			for _, ds := range ts.Disks {
				if ds.State != replication.StateProtected {
					c.State, c.Reason = ds.State, ds.Reason
				}
				if ds.Progress != nil {
					p.Done += ds.Progress.Done
					p.Total += ds.Progress.Total
				}
			}
			if p.Total > 0 && c.State != replication.StateProtected {
				c.Progress = &p
			}
		}
		if d.Protector.Fenced(h.VM) {
			c.State = "paused"
			c.Reason = "fenced after failover"
			c.Progress = nil
		}
		if !c.SyncedAt.IsZero() {
			rpo := now.Sub(c.SyncedAt)
			c.RPONanos, c.RPO = int64(rpo), rpo.Round(100*time.Millisecond).String()
			if vm != nil {
				if pol := d.o.Spec.PolicyOf(vm); pol != nil {
					c.Threshold, c.ThresholdNanos = pol.RPOThreshold.String(), int64(pol.RPOThreshold.Duration)
					c.Alert = rpo > pol.RPOThreshold.Duration
				}
			}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out
}

// Replicate cuts points of every VM on its policy's schedule until ctx
// ends. Fenced VMs are skipped; an error is recorded in the VM's health and
// retried on the next tick.
func (d *Daemon) Replicate(ctx context.Context) {
	var wg sync.WaitGroup
	for _, vm := range d.o.Spec.Protection.VirtualMachines {
		pol := d.o.Spec.PolicyOf(&vm)
		every := pol.CrashConsistentFrequency.Duration
		if every < time.Second {
			every = time.Second
		}
		if d.o.MinInterval > 0 && every > d.o.MinInterval {
			every = d.o.MinInterval
		}
		appEvery := pol.AppConsistentFrequency.Duration
		wg.Add(1)
		go func(name string, every time.Duration) {
			defer wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			lastApp := d.clk.Now()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if d.Protector.Fenced(name) {
					continue
				}
				// App-consistent points on their own schedule: the VM's
				// quiesce commands run around the cut.
				kind := replica.KindCrash
				if appEvery > 0 && d.Protector.Tracked(name) && d.clk.Since(lastApp) >= appEvery {
					kind, lastApp = replica.KindApp, d.clk.Now()
				}
				res, err := d.Protector.Cut(ctx, name, kind, nil)
				switch {
				case errors.Is(err, replication.ErrFenced) || ctx.Err() != nil:
				case err != nil:
					d.setHealth(name, func(h *VMHealth) { h.State, h.Reason = "error", err.Error() })
				default:
					d.observe(name, res)
				}
			}
		}(vm.Name, every)
	}
	wg.Wait()
}

// Run gives a job its ID, stores it and runs it to its end or to a step
// that waits for an operator.
func (d *Daemon) Run(ctx context.Context, j recovery.Job) (recovery.Job, error) {
	j = recovery.Tag(j, recovery.NewJobID(d.clk, j.Operation))
	if _, err := d.Driver.Create(ctx, j); err != nil {
		return recovery.Job{}, err
	}
	return d.Driver.Run(ctx, j.ID)
}

// Resume continues a job, acknowledging waiting steps when ack is set.
func (d *Daemon) Resume(ctx context.Context, id string, ack bool) (recovery.Job, error) {
	return d.Driver.Resume(ctx, id, api.ResumeRequest{Ack: ack})
}
