package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/replica"
)

// Run cuts, ships and commits the group's points on its schedule until ctx
// is done. A failed attempt leaves the group in the error state with the
// reason, its cut's changes go back to tracking, and the attempt is
// retried with backoff: nothing written is ever skipped.
func (g *Group) Run(ctx context.Context) error {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var monitor sync.WaitGroup
	if !g.fakeWait {
		monitor.Add(1)
		go func() {
			defer monitor.Done()
			g.monitor(mctx)
		}()
	}
	var lastCut time.Time
	lastApp := g.start
	lastEmpty := false
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		if g.paused.Load() {
			g.waitWake(ctx, time.Hour)
			continue
		}
		at, app := g.sched.next(lastCut, lastApp, lastEmpty)
		if d := at.Sub(g.clk.Now()); d > 0 {
			if !g.waitWake(ctx, d) {
				continue // woken: the pause state changed
			}
			if ctx.Err() != nil || g.paused.Load() {
				continue
			}
		}
		res, err := g.cycle(ctx, app)
		g.tick()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			g.failed(err)
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			_ = g.wait(ctx, backoff)
			continue
		}
		backoff = 0
		g.recovered()
		lastCut, lastEmpty = res.at, res.empty
		if res.app {
			lastApp = res.at
		}
	}
	cancel()
	monitor.Wait()
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.event("", "", "state", StateStopped)
	return nil
}

// waitWake waits d, or until ctx is done, or until woken by Pause (then it
// returns false).
func (g *Group) waitWake(ctx context.Context, d time.Duration) bool {
	if g.fakeWait {
		_ = g.wait(ctx, d)
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return true
	case <-g.wake:
		return false
	}
}

// monitor samples the RPO and the rates once a second.
func (g *Group) monitor(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.tick()
		}
	}
}

// tick samples the RPO, raises or clears the RPO alert, and samples the
// throughput counters.
func (g *Group) tick() {
	now := g.clk.Now()
	g.mu.Lock()
	rpo, known := RPO(g.syncedAt, now)
	on, changed := alertChange(g.alerting, rpo, known, g.threshold)
	g.alerting = on
	g.mu.Unlock()
	if known {
		g.rpos.add(rpo)
	}
	if changed {
		if on {
			g.event("", "", "rpo-alert", fmt.Sprintf("RPO %s is above the threshold of %s", rpo.Round(time.Millisecond), g.threshold))
		} else {
			g.event("", "", "rpo-ok", fmt.Sprintf("RPO %s is back under the threshold of %s", rpo.Round(time.Millisecond), g.threshold))
		}
	}
	for _, dr := range g.disks {
		dr.shipRate.add(now, dr.shipped.Load())
		dr.writeRate.add(now, dr.d.Tracked.Stats().BytesWritten)
	}
}

func (g *Group) failed(err error) {
	g.mu.Lock()
	g.reason = err.Error()
	g.mu.Unlock()
	g.event("", "", "error", err.Error())
}

func (g *Group) recovered() {
	g.mu.Lock()
	was := g.reason
	g.reason = ""
	g.mu.Unlock()
	if was != "" {
		g.event("", "", "state", "recovered from: "+was)
	}
}

// CycleResult is one point the group took, or did not need to take.
type CycleResult struct {
	At time.Time
	// Empty: nothing was written since the last point, so none was taken;
	// the replicas equal the disks as of At.
	Empty bool
	App   bool
	// Points are each disk's newest point afterwards, in the order of the
	// group's VMs and disks.
	Points []replica.Point
	// Shipped is the bytes of extents the point shipped.
	Shipped int64
}

// Cycle takes one point of the group now (app-consistent when app, running
// the VMs' quiesce commands), for a caller that keeps the schedule itself
// and never calls Run. Calls must not overlap. The RPO, states and events
// are kept as Run keeps them.
func (g *Group) Cycle(ctx context.Context, app bool) (CycleResult, error) {
	before := g.shippedBytes()
	res, err := g.cycle(ctx, app)
	g.tick()
	if err != nil {
		g.failed(err)
		return CycleResult{}, err
	}
	g.recovered()
	return CycleResult{At: res.at, Empty: res.empty, App: res.app, Points: g.NewestPoints(), Shipped: g.shippedBytes() - before}, nil
}

func (g *Group) shippedBytes() int64 {
	var n int64
	for _, dr := range g.disks {
		n += dr.shipped.Load()
	}
	return n
}

type cycleResult struct {
	at    time.Time
	empty bool
	app   bool
}

// cycle takes one group point: quiesce (for an app-consistent point), cut
// every disk at one instant, ship every disk's cut, and commit each
// disk's point once all are staged.
func (g *Group) cycle(ctx context.Context, app bool) (res cycleResult, err error) {
	kind := replica.KindCrash
	if app {
		if g.quiesce(ctx, true) {
			kind = replica.KindApp
		} else {
			app = false
		}
	}
	cuts, pause, err := capture.CutTracked(g.tracked)
	if kind == replica.KindApp {
		g.quiesce(ctx, false)
	}
	if err != nil {
		return res, fmt.Errorf("replication: group %s: %w", g.name, err)
	}
	g.pauses.add(pause)
	at := cuts[0].Time()
	res = cycleResult{at: at, app: kind == replica.KindApp}
	g.mu.Lock()
	g.cuts++
	g.mu.Unlock()

	var total int64
	resync := false
	for i, dr := range g.disks {
		total += cuts[i].Bytes()
		resync = resync || dr.resync || dr.lastPoint == nil
	}
	if total == 0 && kind != replica.KindApp && !resync {
		// Nothing was written since the last point: the replicas still
		// equal the disks, as of this cut.
		for i, dr := range g.disks {
			if err := dr.d.Tracked.Committed(cuts[i], dr.lastPoint.Seq, dr.lastPoint.Time); err != nil {
				return res, err
			}
		}
		g.mu.Lock()
		g.syncedAt = at
		g.emptyCuts++
		g.mu.Unlock()
		res.empty = true
		return res, nil
	}

	txns := make([]Txn, len(g.disks))
	done := make([]bool, len(g.disks))
	defer func() {
		if err == nil {
			return
		}
		for i := range g.disks {
			if done[i] {
				continue
			}
			cuts[i].Abandon()
			if txns[i] != nil {
				_ = txns[i].Abort() // the error that got us here is the one to report
			}
		}
	}()
	for i, dr := range g.disks {
		if txns[i], err = beginCut(ctx, dr.d.Target); err != nil {
			return res, dr.fail("begin the point", err)
		}
		dr.startCut(cuts[i], at)
	}
	if err := g.ship(ctx, cuts, txns); err != nil {
		return res, err
	}

	// Every disk's point is staged: commit them all. A commit is not
	// interrupted half way by a stop.
	cctx := context.WithoutCancel(ctx)
	errs := make([]error, len(g.disks))
	var wg sync.WaitGroup
	for i, dr := range g.disks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := txns[i].Commit(cctx, replica.PointMeta{Time: at, Kind: kind})
			if err != nil {
				errs[i] = dr.fail("commit the point", err)
				return
			}
			done[i] = true
			errs[i] = dr.committed(g, cuts[i], p)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	now := g.clk.Now()
	g.mu.Lock()
	g.syncedAt, g.lastPoint = at, at
	g.points++
	prune := now.Sub(g.lastPrune) >= g.pruneEv
	if prune {
		g.lastPrune = now
	}
	g.mu.Unlock()
	g.commit.add(now.Sub(at))
	if prune {
		g.prune(ctx)
	}
	return res, nil
}

// beginCut starts a point at t, dropping a point an interrupted run left
// staged: its extents are of an older cut.
func beginCut(ctx context.Context, t Target) (Txn, error) {
	txn, err := t.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if len(txn.Staged()) == 0 {
		return txn, nil
	}
	if err := txn.Abort(); err != nil {
		return nil, fmt.Errorf("drop the point %d left staged by an interrupted run: %w", txn.Seq(), err)
	}
	return t.Begin(ctx)
}

func (dr *diskRun) fail(op string, err error) error {
	return fmt.Errorf("replication: VM %s disk %s: %s: %w", dr.vm.vm.Name, dr.d.Name, op, err)
}

func (dr *diskRun) startCut(c *capture.TrackedCut, at time.Time) {
	dr.mu.Lock()
	dr.cutBytes, dr.cutStart = c.Bytes(), at
	dr.shippedNow.Store(0)
	dr.mu.Unlock()
}

// committed records disk's point p of cut c.
func (dr *diskRun) committed(g *Group, c *capture.TrackedCut, p replica.Point) error {
	dr.written.Add(p.Bytes)
	dr.mu.Lock()
	dr.lastPoint = &p
	was := dr.state
	if dr.resync {
		dr.resync, dr.state, dr.reason = false, StateProtected, ""
	}
	dr.mu.Unlock()
	if was != StateProtected {
		g.event(dr.vm.vm.Name, dr.d.Name, "state", fmt.Sprintf("%s: %s done with point %d", StateProtected, was, p.Seq))
	}
	if err := dr.d.Tracked.Committed(c, p.Seq, p.Time); err != nil {
		return dr.fail(fmt.Sprintf("point %d is committed, but", p.Seq), err)
	}
	return nil
}

// ship sends every disk's cut: each VM's disks through that VM's streams,
// the VMs side by side.
func (g *Group) ship(ctx context.Context, cuts []*capture.TrackedCut, txns []Txn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) { once.Do(func() { first = err; cancel() }) }
	idx := 0
	for _, vr := range g.vms {
		type item struct {
			dr  *diskRun
			c   *capture.TrackedCut
			txn Txn
			r   capture.Range
		}
		work := make(chan item)
		maxLen := int64(0)
		var items []item
		for _, dr := range vr.disks {
			c, txn := cuts[idx], txns[idx]
			idx++
			ml := max(g.maxExt, c.Disk().Unit())
			maxLen = max(maxLen, ml)
			for _, r := range c.Extents(ml) {
				items = append(items, item{dr, c, txn, r})
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(work)
			for _, it := range items {
				select {
				case work <- it:
				case <-ctx.Done():
					return
				}
			}
		}()
		for range vr.threads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, maxLen)
				for it := range work {
					if err := it.dr.shipExtent(ctx, it.c, it.txn, it.r, buf[:it.r.Len]); err != nil {
						fail(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	return first
}

// shipExtent reads one extent of the cut and stages it at the target.
func (dr *diskRun) shipExtent(ctx context.Context, c *capture.TrackedCut, txn Txn, r capture.Range, buf []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.ReadAt(buf, r.Off); err != nil {
		return dr.fail("read the cut", err)
	}
	var err error
	switch {
	case isZero(buf) && dr.lastPoint == nil:
		// A new replica is all zeros already.
	case isZero(buf):
		err = txn.WriteHole(ctx, r.Off, r.Len)
		dr.holes.Add(1)
	default:
		err = txn.WriteExtent(ctx, r.Off, buf, blake3.Sum256(buf))
		dr.shipped.Add(r.Len)
	}
	if err != nil {
		return dr.fail(fmt.Sprintf("ship the extent at %d+%d", r.Off, r.Len), err)
	}
	dr.shippedNow.Add(r.Len)
	return nil
}

var zeroBuf [64 << 10]byte

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroBuf))
		if !bytes.Equal(p[:n], zeroBuf[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// quiesce runs every VM's pre (or post) command. A failed pre command runs
// the post commands of the VMs already quiesced and returns false: the
// point is then crash-consistent.
func (g *Group) quiesce(ctx context.Context, pre bool) bool {
	var done []*vmRun
	for _, vr := range g.vms {
		q := vr.vm.Quiesce
		if q == nil {
			continue
		}
		cmd := q.Post
		which := "post"
		if pre {
			cmd, which = q.Pre, "pre"
		}
		if len(cmd) == 0 {
			continue
		}
		if err := g.runQuiesce(ctx, vr.vm.Name, cmd); err != nil {
			g.event(vr.vm.Name, "", "quiesce", fmt.Sprintf("quiesce.%s failed, the point is crash-consistent: %v", which, err))
			if pre {
				for _, d := range done {
					if post := d.vm.Quiesce.Post; len(post) > 0 {
						if err := g.runQuiesce(ctx, d.vm.Name, post); err != nil {
							g.event(d.vm.Name, "", "quiesce", fmt.Sprintf("quiesce.post failed: %v", err))
						}
					}
				}
				return false
			}
			continue
		}
		done = append(done, vr)
	}
	return true
}

func (g *Group) runQuiesce(ctx context.Context, vm string, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, g.quiesceTO)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "STANDBY_VM="+vm, "STANDBY_GROUP="+g.name)
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return nil
}

// prune applies retention to every disk that has a Pruner.
func (g *Group) prune(ctx context.Context) {
	for _, dr := range g.disks {
		if dr.d.Pruner == nil {
			continue
		}
		dropped, err := dr.d.Pruner.Prune(ctx, g.retention)
		if err != nil {
			g.event(dr.vm.vm.Name, dr.d.Name, "error", fmt.Sprintf("retention: %v", err))
			continue
		}
		if len(dropped) > 0 {
			g.event(dr.vm.vm.Name, dr.d.Name, "retention", fmt.Sprintf("%d points removed by retention", len(dropped)))
		}
	}
}

// NewestPoints returns each disk's newest committed point, in the order
// of the group's VMs and disks (Seq 0 when it has none).
func (g *Group) NewestPoints() []replica.Point {
	out := make([]replica.Point, len(g.disks))
	for i, dr := range g.disks {
		dr.mu.Lock()
		if dr.lastPoint != nil {
			out[i] = *dr.lastPoint
		}
		dr.mu.Unlock()
	}
	return out
}

// ShutdownTracking ends the tracking of every disk cleanly, once the disks'
// users are gone (their FUSE files unmounted) and Run has returned: the
// next start resumes without a resync.
func (g *Group) ShutdownTracking() error {
	var errs []error
	for _, dr := range g.disks {
		dr.mu.Lock()
		var seq uint64
		var at time.Time
		if dr.lastPoint != nil {
			seq, at = dr.lastPoint.Seq, dr.lastPoint.Time
		}
		dr.mu.Unlock()
		if err := dr.d.Tracked.Shutdown(seq, at); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
