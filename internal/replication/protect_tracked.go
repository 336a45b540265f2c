package replication

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/replica"
)

// A machine protected with tracked capture runs on its disks as the
// Protector serves them: each SourceDisk's Served path is a FUSE file over
// the backing Source, every write marked dirty before it is answered. A
// point of the VM is one write barrier across all its disks (a Group of one
// VM, its schedule kept by the Protector's caller), so the disks are cut at
// the same instant while the machine runs; only what was written since the
// last point is shipped. A gap in tracking (this process died) heals with
// a resync of the regions the write-intent log names, shown as the state
// "resyncing".

// trackedRun is what a tracked machine holds while it is served.
type trackedRun struct {
	disks  []*capture.Tracked
	mounts []*capture.Mount
	group  *Group
}

// Tracked reports whether vm is protected with tracked capture.
func (p *Protector) Tracked(vm string) bool {
	pv, err := p.get(vm)
	return err == nil && pv.tr != nil
}

// serveTracked opens tracking of each disk against its replica and serves
// it at its Served path. The caller holds p.mu, pv is not yet shared.
func (p *Protector) serveTracked(ctx context.Context, pv *protected) error {
	tr := &trackedRun{}
	fail := func(err error) error {
		for _, m := range tr.mounts {
			_ = m.Detach()
		}
		for _, t := range tr.disks {
			_ = t.Close()
		}
		return err
	}
	vm := VM{Name: pv.m.Name, Policy: pv.m.Policy, Quiesce: pv.m.Quiesce}
	for _, d := range pv.m.Disks {
		if d.Served == "" {
			return fail(fmt.Errorf("disk %s has no path to be served at", d.Name))
		}
		r := pv.replicas[d.Name]
		target := Local(r)
		info, err := target.Info(ctx)
		if err != nil {
			return fail(err)
		}
		stateDir := filepath.Join(p.vmDir(pv.m.Name), d.Name+".tracked")
		if err := os.MkdirAll(stateDir, 0o755); err != nil {
			return fail(err)
		}
		t, err := capture.OpenTracked(d.Source, capture.TrackedOptions{BlockSize: info.BlockSize,
			StateDir: stateDir, Target: info.Name, Newest: info.Newest.Seq, Clock: p.clock})
		if err != nil {
			return fail(err)
		}
		tr.disks = append(tr.disks, t)
		if err := os.MkdirAll(filepath.Dir(d.Served), 0o755); err != nil {
			return fail(err)
		}
		m, err := capture.Serve(d.Served, t)
		if err != nil {
			return fail(err)
		}
		tr.mounts = append(tr.mounts, m)
		vm.Disks = append(vm.Disks, Disk{Name: d.Name, Tracked: t, Target: target, Pruner: r})
	}
	g, err := NewGroup(ctx, GroupOptions{Name: pv.m.Name, VMs: []VM{vm}, Clock: p.clock})
	if err != nil {
		return fail(err)
	}
	tr.group = g
	pv.tr = tr
	if pv.st.Served {
		// An earlier process served these disks: whoever had them open
		// holds a dead file.
		for _, d := range pv.m.Disks {
			p.reserved = append(p.reserved, ReservedDisk{VM: pv.m.Name, Path: d.Served, Dir: filepath.Dir(d.Served)})
		}
	}
	pv.st.Served = true
	return nil
}

// cutTracked takes one point of a tracked VM: all its disks cut at one
// instant, what changed shipped and committed. When nothing was written
// since the last point, no point is taken and the last one is returned:
// the replicas equal the disks as of res.SyncedAt.
func (p *Protector) cutTracked(ctx context.Context, pv *protected, kind string) (CutResult, error) {
	start := p.clock.Now()
	cr, err := pv.tr.group.Cycle(ctx, kind == replica.KindApp)
	if err != nil {
		return CutResult{}, fmt.Errorf("replication: cut %s: %w", pv.m.Name, err)
	}
	res := CutResult{BytesShipped: cr.Shipped, SyncedAt: cr.At}
	if cr.Empty {
		if n := len(pv.st.Points); n > 0 {
			res.Point = pv.st.Points[n-1]
		}
		res.Seconds = p.clock.Since(start).Seconds()
		return res, nil
	}
	pt := VMPoint{Time: cr.At, Kind: replica.KindCrash, Disks: map[string]uint64{}}
	if cr.App {
		pt.Kind = replica.KindApp
	}
	for i, d := range pv.m.Disks {
		pt.Disks[d.Name] = cr.Points[i].Seq
	}
	if err := p.recordLocked(pv, &pt); err != nil {
		return res, err
	}
	res.Point = pt
	res.Seconds = p.clock.Since(start).Seconds()
	p.forgetPrunedLocked(pv)
	return res, nil
}

// closeTracked stops serving a tracked VM's disks. Their tracking ends
// cleanly: writes that reach a disk after this fail, so the next process
// resumes from the dirty map without a resync. Errors are not reported: a
// tracking that did not end cleanly resyncs what its write-intent log names.
func (pv *protected) closeTracked() {
	if pv.tr == nil {
		return
	}
	_ = pv.tr.group.ShutdownTracking()
	for _, m := range pv.tr.mounts {
		_ = m.Detach()
	}
	for _, t := range pv.tr.disks {
		_ = t.Close() // closed already by the shutdown, unless it failed
	}
}

// trackedStatus is the group's view of a tracked VM: state, reason and
// progress of each disk.
func (pv *protected) trackedStatus() (VMStatus, bool) {
	if pv.tr == nil {
		return VMStatus{}, false
	}
	st := pv.tr.group.Status()
	if len(st.VMs) == 0 {
		return VMStatus{}, false
	}
	return st.VMs[0], true
}

// TrackedStatus is a tracked VM's replication as its loop sees it: each
// disk's state (initial-sync, resyncing, protected), reason and progress.
func (p *Protector) TrackedStatus(vm string) (VMStatus, bool) {
	pv, err := p.get(vm)
	if err != nil {
		return VMStatus{}, false
	}
	return pv.trackedStatus()
}
