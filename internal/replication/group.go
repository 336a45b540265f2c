package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/spec"
)

// States of a VM and of a disk.
const (
	StateInitialSync = "initial-sync" // the first copy of the disk is being sent
	StateProtected   = "protected"    // points are being cut on schedule
	StateResyncing   = "resyncing"    // a gap in tracking is being healed
	StatePaused      = "paused"       // tracking goes on, no points are cut
	StateError       = "error"        // the last attempt failed; see the reason
	StateStopped     = "stopped"      // the loop has ended
)

// Pruner applies retention at a replica. *replica.Replica is one.
type Pruner interface {
	Prune(ctx context.Context, p replica.Retention) ([]uint64, error)
}

// Disk is one protected disk of a VM: tracked at the source, replicated to
// its Target.
type Disk struct {
	Name    string
	Tracked *capture.Tracked
	Target  Target
	// Pruner, when set, applies the policy's retention as points arrive.
	Pruner Pruner
}

// VM is a protected machine of a group.
type VM struct {
	Name    string
	Disks   []Disk
	Quiesce *spec.Quiesce // commands run around app-consistent cuts
	// Policy is the VM's replication policy. All VMs of a consistency
	// group are cut together, on the schedule of the first VM's policy;
	// each VM's own uploadThreadsPerVM streams ship its disks.
	Policy spec.Policy
}

// GroupOptions describe a consistency group: the VMs cut at one instant.
// A VM on its own is a group of one.
type GroupOptions struct {
	Name string
	VMs  []VM
	// Clock drives schedules, RPO and stamps. Default clock.Real.
	Clock clock.Clock
	// Wait sleeps for d or until ctx is done. Default: a timer. Tests with
	// a fake clock advance it here.
	Wait func(ctx context.Context, d time.Duration) error
	// Events, when set, is told of every event (state changes, points,
	// RPO alerts, errors). It must not block for long.
	Events func(Event)
	// MaxExtent bounds one shipped extent (default 1 MiB, at least one
	// block).
	MaxExtent int64
	// PruneEvery spaces the retention runs (default one minute).
	PruneEvery time.Duration
	// QuiesceTimeout bounds each quiesce command (default one minute).
	QuiesceTimeout time.Duration
}

// Event is something that happened to a group, a VM or a disk.
type Event struct {
	Time    time.Time `json:"time"`
	Group   string    `json:"group"`
	VM      string    `json:"vm,omitempty"`
	Disk    string    `json:"disk,omitempty"`
	Kind    string    `json:"kind"` // state, point, rpo-alert, rpo-ok, error, quiesce
	Message string    `json:"message"`
}

// Group runs the replication loop of one consistency group.
type Group struct {
	name      string
	vms       []*vmRun
	disks     []*diskRun // all disks of all VMs, in cut order
	tracked   []*capture.Tracked
	clk       clock.Clock
	wait      func(ctx context.Context, d time.Duration) error
	fakeWait  bool // Wait was given: no timers, no monitor
	emit      func(Event)
	sched     schedule
	threshold time.Duration
	retention replica.Retention
	maxExt    int64
	pruneEv   time.Duration
	quiesceTO time.Duration
	start     time.Time

	paused atomic.Bool
	wake   chan struct{}

	mu        sync.Mutex
	syncedAt  time.Time // newest cut all committed
	alerting  bool
	reason    string // of the last failure, while failing
	lastPoint time.Time
	cuts      int64
	points    int64
	emptyCuts int64
	lastPrune time.Time
	events    []Event
	stopped   bool

	pauses series // barrier pauses
	rpos   series // RPO sampled each second
	commit series // cut to committed
}

type vmRun struct {
	vm      VM
	threads int
	disks   []*diskRun
}

type diskRun struct {
	d    Disk
	vm   *vmRun
	info Info

	mu          sync.Mutex
	state       string // initial-sync, protected, resyncing
	reason      string
	resync      bool // a resync is still to be committed
	initial     bool
	lastPoint   *replica.Point
	cutBytes    int64 // of the cut being shipped
	cutStart    time.Time
	shippedNow  atomic.Int64 // of the cut being shipped
	shipped     atomic.Int64 // all cuts
	holes       atomic.Int64
	written     atomic.Int64 // bytes the points wrote at the replica
	shipRate    rate
	writeRate   rate
	lastErrored bool
}

// NewGroup prepares the loop of a group. It reads each target's newest
// point, so the disks' tracking must have been opened against it.
func NewGroup(ctx context.Context, opts GroupOptions) (*Group, error) {
	if len(opts.VMs) == 0 {
		return nil, errors.New("replication: group: no VMs")
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	pol := opts.VMs[0].Policy
	g := &Group{
		name:      opts.Name,
		clk:       clk,
		wait:      opts.Wait,
		fakeWait:  opts.Wait != nil,
		emit:      opts.Events,
		sched:     schedule{crashEvery: pol.CrashConsistentFrequency.Duration, appEvery: pol.AppConsistentFrequency.Duration, idlePoll: 200 * time.Millisecond},
		threshold: pol.RPOThreshold.Duration,
		retention: replica.Retention{Window: pol.RecoveryPointRetention.Duration},
		maxExt:    opts.MaxExtent,
		pruneEv:   opts.PruneEvery,
		quiesceTO: opts.QuiesceTimeout,
		wake:      make(chan struct{}, 1),
	}
	if g.wait == nil {
		g.wait = sleep
	}
	if g.maxExt == 0 {
		g.maxExt = 1 << 20
	}
	if g.pruneEv == 0 {
		g.pruneEv = time.Minute
	}
	if g.quiesceTO == 0 {
		g.quiesceTO = time.Minute
	}
	g.start = clk.Now()
	oldest := time.Time{}
	for _, vm := range opts.VMs {
		if len(vm.Disks) == 0 {
			return nil, fmt.Errorf("replication: group %s: VM %s has no disks", g.name, vm.Name)
		}
		threads := vm.Policy.UploadThreadsPerVM
		if threads == 0 {
			threads = DefaultThreads
		}
		if threads < 1 || threads > MaxThreads {
			return nil, fmt.Errorf("replication: VM %s: %d streams: want 1 to %d", vm.Name, threads, MaxThreads)
		}
		vr := &vmRun{vm: vm, threads: threads}
		g.vms = append(g.vms, vr)
		for _, d := range vm.Disks {
			info, err := d.Target.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("replication: VM %s disk %s: %w", vm.Name, d.Name, err)
			}
			if info.Size != d.Tracked.Size() {
				return nil, fmt.Errorf("replication: VM %s disk %s: the disk holds %d bytes, the replica %d: a replica keeps its size; replicate to a new replica, or resize the disk back", vm.Name, d.Name, d.Tracked.Size(), info.Size)
			}
			if info.BlockSize%d.Tracked.Unit() != 0 && d.Tracked.Unit()%info.BlockSize != 0 {
				return nil, fmt.Errorf("replication: VM %s disk %s: the replica's %d-byte blocks do not fit the tracking unit of %d bytes", vm.Name, d.Name, info.BlockSize, d.Tracked.Unit())
			}
			dr := &diskRun{d: d, vm: vr, info: info, state: StateProtected}
			dr.shipRate.window, dr.writeRate.window = 10*time.Second, 10*time.Second
			rs := d.Tracked.Resync()
			switch {
			case info.Newest.Seq == 0:
				dr.state, dr.initial, dr.resync, dr.reason = StateInitialSync, true, true, rs.Reason
			case rs.Needed:
				dr.state, dr.resync, dr.reason = StateResyncing, true, rs.Reason
			}
			if info.Newest.Seq > 0 {
				p := info.Newest
				dr.lastPoint = &p
				if oldest.IsZero() || p.Time.Before(oldest) {
					oldest = p.Time
				}
			} else {
				oldest = time.Time{}
			}
			vr.disks = append(vr.disks, dr)
			g.disks = append(g.disks, dr)
			g.tracked = append(g.tracked, d.Tracked)
		}
	}
	allHave := true
	for _, dr := range g.disks {
		if dr.lastPoint == nil {
			allHave = false
		}
	}
	if allHave {
		g.syncedAt = oldest
	}
	for _, dr := range g.disks {
		if dr.state != StateProtected {
			g.event(dr.vm.vm.Name, dr.d.Name, "state", dr.state+": "+dr.reason)
		}
	}
	return g, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Group) event(vm, disk, kind, msg string) {
	e := Event{Time: g.clk.Now(), Group: g.name, VM: vm, Disk: disk, Kind: kind, Message: msg}
	g.mu.Lock()
	g.events = append(g.events, e)
	if len(g.events) > 100 {
		g.events = g.events[len(g.events)-100:]
	}
	g.mu.Unlock()
	if g.emit != nil {
		g.emit(e)
	}
}

// Pause stops cutting points (tracking goes on, so nothing is lost) or
// resumes.
func (g *Group) Pause(on bool) {
	if g.paused.Swap(on) != on {
		state := StatePaused
		if !on {
			state = "resumed"
		}
		g.event("", "", "state", state)
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// Status is the state of a group for the CLI and the daemon.
type Status struct {
	Group               string      `json:"group"`
	Time                time.Time   `json:"time"`
	State               string      `json:"state"`
	Reason              string      `json:"reason,omitempty"`
	RPOSeconds          *float64    `json:"rpoSeconds"` // null before the first point
	RPOThresholdSeconds float64     `json:"rpoThresholdSeconds"`
	RPOAlert            bool        `json:"rpoAlert"`
	CrashEvery          string      `json:"crashConsistentFrequency"`
	AppEvery            string      `json:"appConsistentFrequency"`
	Cuts                int64       `json:"cuts"`
	Points              int64       `json:"points"` // group points committed by this loop
	EmptyCuts           int64       `json:"emptyCuts"`
	LastPoint           *time.Time  `json:"lastPoint,omitempty"`
	BarrierMs           Percentiles `json:"barrierMs"`        // write pause of the cuts
	RPOStats            Percentiles `json:"rpoStats"`         // RPO sampled each second, in seconds
	CommitSeconds       Percentiles `json:"commitSeconds"`    // from cut to committed
	ShippedBps          float64     `json:"shippedBps"`       // over the last 10 s
	WrittenBps          float64     `json:"writtenBps"`       // by the VMs, over the last 10 s
	BytesShipped        int64       `json:"bytesShipped"`     // extent data handed to the targets
	BytesWritten        int64       `json:"bytesWritten"`     // by the VMs to their tracked disks
	BytesCopiedAside    int64       `json:"bytesCopiedAside"` // copy-before-write
	VMs                 []VMStatus  `json:"vms"`
	Events              []Event     `json:"events"`
}

// VMStatus is the state of one VM.
type VMStatus struct {
	Name       string       `json:"name"`
	State      string       `json:"state"`
	Reason     string       `json:"reason,omitempty"`
	RPOSeconds *float64     `json:"rpoSeconds"`
	RPOAlert   bool         `json:"rpoAlert"`
	Threads    int          `json:"threads"`
	ShippedBps float64      `json:"shippedBps"`
	WrittenBps float64      `json:"writtenBps"`
	Disks      []DiskStatus `json:"disks"`
}

// DiskStatus is the state of one disk.
type DiskStatus struct {
	Name         string               `json:"name"`
	Replica      string               `json:"replica"`
	State        string               `json:"state"`
	Reason       string               `json:"reason,omitempty"`
	Progress     *Progress            `json:"progress,omitempty"` // while initial-sync or resyncing
	LastPoint    *replica.Point       `json:"lastPoint,omitempty"`
	BytesShipped int64                `json:"bytesShipped"`
	BytesWritten int64                `json:"bytesWritten"` // at the replica by the points
	Holes        int64                `json:"holes"`
	Tracking     capture.TrackedStats `json:"tracking"`
}

// Progress of the cut being shipped.
type Progress struct {
	Done       int64   `json:"done"`
	Total      int64   `json:"total"`
	Percent    float64 `json:"percent"`
	ETASeconds float64 `json:"etaSeconds"`
}

// Status returns the group's state now.
func (g *Group) Status() Status {
	now := g.clk.Now()
	g.mu.Lock()
	st := Status{
		Group: g.name, Time: now, RPOThresholdSeconds: g.threshold.Seconds(), RPOAlert: g.alerting,
		CrashEvery: durationText(g.sched.crashEvery, "continuous"), AppEvery: durationText(g.sched.appEvery, "never"),
		Cuts: g.cuts, Points: g.points, EmptyCuts: g.emptyCuts, Reason: g.reason,
		Events: append([]Event(nil), g.events...),
	}
	if !g.lastPoint.IsZero() {
		lp := g.lastPoint
		st.LastPoint = &lp
	}
	if rpo, ok := RPO(g.syncedAt, now); ok {
		s := rpo.Seconds()
		st.RPOSeconds = &s
	}
	stopped := g.stopped
	failing := g.reason != ""
	g.mu.Unlock()
	st.BarrierMs = g.pauses.percentiles(time.Millisecond)
	st.RPOStats = g.rpos.percentiles(time.Second)
	st.CommitSeconds = g.commit.percentiles(time.Second)
	rank := map[string]int{StateProtected: 0, StatePaused: 1, StateResyncing: 2, StateInitialSync: 3, StateError: 4, StateStopped: 5}
	group := StateProtected
	for _, vr := range g.vms {
		vs := VMStatus{Name: vr.vm.Name, State: StateProtected, RPOSeconds: st.RPOSeconds, RPOAlert: st.RPOAlert, Threads: vr.threads}
		for _, dr := range vr.disks {
			ds := dr.status(now)
			switch {
			case stopped:
				ds.State = StateStopped
			case failing:
				ds.State, ds.Reason = StateError, st.Reason
			case g.paused.Load():
				ds.State = StatePaused
			}
			if rank[ds.State] > rank[vs.State] {
				vs.State, vs.Reason = ds.State, ds.Reason
			}
			vs.ShippedBps += dr.shipRate.perSecond()
			vs.WrittenBps += dr.writeRate.perSecond()
			st.BytesShipped += ds.BytesShipped
			st.BytesWritten += ds.Tracking.BytesWritten
			st.BytesCopiedAside += ds.Tracking.CopiedAside
			vs.Disks = append(vs.Disks, ds)
		}
		if rank[vs.State] > rank[group] {
			group = vs.State
		}
		st.ShippedBps += vs.ShippedBps
		st.WrittenBps += vs.WrittenBps
		st.VMs = append(st.VMs, vs)
	}
	st.State = group
	return st
}

func (dr *diskRun) status(now time.Time) DiskStatus {
	dr.mu.Lock()
	defer dr.mu.Unlock()
	ds := DiskStatus{Name: dr.d.Name, Replica: dr.info.Name, State: dr.state, Reason: dr.reason,
		BytesShipped: dr.shipped.Load(), BytesWritten: dr.written.Load(), Holes: dr.holes.Load(),
		Tracking: dr.d.Tracked.Stats()}
	if dr.state == StateProtected {
		ds.Reason = ""
	}
	if dr.lastPoint != nil {
		p := *dr.lastPoint
		ds.LastPoint = &p
	}
	if dr.state == StateInitialSync || dr.state == StateResyncing {
		done, total := dr.shippedNow.Load(), dr.cutBytes
		pr := &Progress{Done: done, Total: total}
		if total > 0 {
			pr.Percent = 100 * float64(done) / float64(total)
		}
		if el := now.Sub(dr.cutStart).Seconds(); done > 0 && el > 0 {
			pr.ETASeconds = float64(total-done) / (float64(done) / el)
		}
		ds.Progress = pr
	}
	return ds
}

func durationText(d time.Duration, zero string) string {
	if d == 0 {
		return zero
	}
	return d.String()
}
