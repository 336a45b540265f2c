package daemon

import (
	"context"
	"sort"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/replication"
)

// Protection adapts a replication.Protector to recovery.Protection.
type Protection struct{ P *replication.Protector }

var _ recovery.Protection = Protection{}

func toPoint(p replication.VMPoint) recovery.Point {
	return recovery.Point{Seq: p.Seq, Time: p.Time, Kind: p.Kind}
}

// Points lists the VM's points.
func (a Protection) Points(ctx context.Context, vm string) ([]recovery.Point, error) {
	ps, err := a.P.Points(ctx, vm)
	if err != nil {
		return nil, err
	}
	out := make([]recovery.Point, len(ps))
	for i, p := range ps {
		out[i] = toPoint(p)
	}
	return out, nil
}

// Pin pins a point for a job.
func (a Protection) Pin(ctx context.Context, vm string, seq uint64, job string) error {
	return a.P.Pin(ctx, vm, seq, job)
}

// Unpin releases the job's pins.
func (a Protection) Unpin(ctx context.Context, vm, job string) error { return a.P.Unpin(ctx, vm, job) }

// Fence stops the VM's replication.
func (a Protection) Fence(ctx context.Context, vm string) error { return a.P.Fence(ctx, vm) }

// Final cuts the last point of a stopped VM.
func (a Protection) Final(ctx context.Context, vm string) (recovery.Point, error) {
	p, err := a.P.Final(ctx, vm)
	return toPoint(p), err
}

func disksOf(m map[string]string) []provider.Disk {
	out := make([]provider.Disk, 0, len(m))
	for name, path := range m {
		out = append(out, provider.Disk{Name: name, Path: path})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Disks gives the VM's disks at a point: overlays served through FUSE, or
// exported copies where FUSE is not available.
func (a Protection) Disks(ctx context.Context, vm string, seq uint64, dir string) ([]provider.Disk, error) {
	m, err := a.P.Disks(ctx, vm, seq, dir)
	if err != nil {
		return nil, err
	}
	return disksOf(m), nil
}

// Commit releases the job's pins.
func (a Protection) Commit(ctx context.Context, vm, job string) error {
	return a.P.Commit(ctx, vm, job)
}

// Recovered records the disks the VM runs from.
func (a Protection) Recovered(ctx context.Context, vm string, disks []provider.Disk) error {
	m := map[string]string{}
	for _, d := range disks {
		m[d.Name] = d.Path
	}
	return a.P.SetRecovered(vm, m)
}

// RecoveredDisks are the disks the VM runs from after a failover.
func (a Protection) RecoveredDisks(ctx context.Context, vm string) ([]provider.Disk, error) {
	m, err := a.P.RecoveredDisks(vm)
	if err != nil {
		return nil, err
	}
	return disksOf(m), nil
}

// Reverse copies changed blocks back to the source disks.
func (a Protection) Reverse(ctx context.Context, vm string) (recovery.ReverseStats, error) {
	st, err := a.P.Reverse(ctx, vm)
	return recovery.ReverseStats{BytesRead: st.BytesRead, BytesSent: st.BytesSent, Blocks: st.Blocks, InAll: st.InAll, Differ: st.Differ, Seconds: st.Seconds}, err
}

// SourceDisks are the VM's own disks.
func (a Protection) SourceDisks(ctx context.Context, vm string) ([]provider.Disk, error) {
	m, err := a.P.Sources(vm)
	if err != nil {
		return nil, err
	}
	return disksOf(m), nil
}

// Release discards the disks served under dir.
func (a Protection) Release(ctx context.Context, dir string) error { return a.P.Release(ctx, dir) }

// Resume unfences the VM.
func (a Protection) Resume(ctx context.Context, vm string) error { return a.P.Unfence(ctx, vm) }
