package replication

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/spec"
)

func TestScheduleNext(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := time.Second
	cases := []struct {
		name      string
		s         schedule
		lastCut   time.Time
		lastApp   time.Time
		lastEmpty bool
		at        time.Time
		app       bool
	}{
		{"first cut at once", schedule{crashEvery: 5 * sec}, time.Time{}, t0, false, time.Time{}, false},
		{"every 5s", schedule{crashEvery: 5 * sec}, t0, t0, false, t0.Add(5 * sec), false},
		{"continuous: next batch at once", schedule{idlePoll: 200 * time.Millisecond}, t0, t0, false, t0, false},
		{"continuous, idle: poll", schedule{idlePoll: 200 * time.Millisecond}, t0, t0, true, t0.Add(200 * time.Millisecond), false},
		{"app due before crash", schedule{crashEvery: 5 * sec, appEvery: 3 * sec}, t0, t0.Add(-1 * sec), false, t0.Add(2 * sec), true},
		{"crash due before app", schedule{crashEvery: 5 * sec, appEvery: time.Hour}, t0, t0, false, t0.Add(5 * sec), false},
		{"app and crash at once: app", schedule{crashEvery: 5 * sec, appEvery: 5 * sec}, t0, t0, false, t0.Add(5 * sec), true},
	}
	for _, c := range cases {
		at, app := c.s.next(c.lastCut, c.lastApp, c.lastEmpty)
		if !at.Equal(c.at) || app != c.app {
			t.Errorf("%s: next = %v app=%v, want %v app=%v", c.name, at, app, c.at, c.app)
		}
	}
}

func TestAlertChange(t *testing.T) {
	cases := []struct {
		alerting  bool
		rpo       time.Duration
		known     bool
		threshold time.Duration
		on, chg   bool
	}{
		{false, 10 * time.Second, true, 30 * time.Second, false, false},
		{false, 31 * time.Second, true, 30 * time.Second, true, true},
		{true, 40 * time.Second, true, 30 * time.Second, true, false},
		{true, 30 * time.Second, true, 30 * time.Second, false, true},
		{false, time.Hour, false, 30 * time.Second, false, false}, // no point yet: no RPO
		{false, time.Hour, true, 0, false, false},                 // no threshold
	}
	for i, c := range cases {
		on, chg := alertChange(c.alerting, c.rpo, c.known, c.threshold)
		if on != c.on || chg != c.chg {
			t.Errorf("case %d: (%v, %v), want (%v, %v)", i, on, chg, c.on, c.chg)
		}
	}
}

// loopDisk is a tracked disk and its local replica, without FUSE: the test
// writes through Tracked.WriteAt.
type loopDisk struct {
	path string
	tr   *capture.Tracked
	r    *replica.Replica
}

func newLoopDisk(t *testing.T, dir, name string, size int64, clk clock.Clock) *loopDisk {
	t.Helper()
	path := filepath.Join(dir, name+".img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	r, err := replica.Create(filepath.Join(dir, name+".replica"), size, replica.Options{BlockSize: 64 << 10, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	tr, err := capture.OpenTracked(path, capture.TrackedOptions{Target: "local:" + name, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &loopDisk{path: path, tr: tr, r: r}
}

// TestLoopStatesAndRPO drives a group with a fake clock: the initial sync,
// points, an idle cut that keeps the RPO low, the RPO alert when the
// target fails and the recovery, app-consistent points with quiesce
// commands, and a pause.
func TestLoopStatesAndRPO(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	d := newLoopDisk(t, dir, "d0", 4<<20, clk)
	flaky := &flakyTarget{Target: Local(d.r)}
	marks := filepath.Join(dir, "quiesce.log")
	ctx := context.Background()
	pol := spec.Policy{CrashConsistentFrequency: spec.Duration{Duration: 5 * time.Second},
		AppConsistentFrequency: spec.Duration{Duration: time.Hour}, RPOThreshold: spec.Duration{Duration: 30 * time.Second}, UploadThreadsPerVM: 2}
	var events []Event
	g, err := NewGroup(ctx, GroupOptions{
		Name: "g", Clock: clk,
		Wait:   func(ctx context.Context, d time.Duration) error { clk.Advance(d); return nil },
		Events: func(e Event) { events = append(events, e) },
		VMs: []VM{{Name: "vm1", Policy: pol, Disks: []Disk{{Name: "d0", Tracked: d.tr, Target: flaky, Pruner: d.r}},
			Quiesce: &spec.Quiesce{Pre: []string{"sh", "-c", "echo pre >> " + marks}, Post: []string{"sh", "-c", "echo post >> " + marks}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := g.Status()
	if st.State != StateInitialSync || st.RPOSeconds != nil {
		t.Fatalf("before the first point: state %s, rpo %v", st.State, st.RPOSeconds)
	}
	data := bytes.Repeat([]byte{7}, 100<<10)
	if _, err := d.tr.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := g.cycle(ctx, false); err != nil {
		t.Fatal(err)
	}
	st = g.Status()
	if st.State != StateProtected || st.RPOSeconds == nil || *st.RPOSeconds != 0 {
		t.Fatalf("after the first point: %s rpo %v", st.State, st.RPOSeconds)
	}
	clk.Advance(10 * time.Second)
	// An idle cut: no point, but the RPO is that of the cut.
	res, err := g.cycle(ctx, false)
	if err != nil || !res.empty {
		t.Fatalf("idle cut: %+v %v", res, err)
	}
	if n := len(d.r.Points()); n != 1 {
		t.Fatalf("an idle cut made a point: %d points", n)
	}
	clk.Advance(time.Second)
	if st := g.Status(); *st.RPOSeconds != 1 {
		t.Fatalf("rpo after an idle cut: %v", *st.RPOSeconds)
	}
	// The target fails: the RPO grows past the threshold, an alert.
	flaky.fail = true
	if _, err := d.tr.WriteAt(data, 2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := g.cycle(ctx, false); err == nil {
		t.Fatal("a cycle against a failing target succeeded")
	} else {
		g.failed(err)
	}
	clk.Advance(40 * time.Second)
	g.tick()
	st = g.Status()
	if !st.RPOAlert || st.State != StateError || !strings.Contains(st.Reason, "the target is down") {
		t.Fatalf("failing target: alert %v state %s reason %q", st.RPOAlert, st.State, st.Reason)
	}
	flaky.fail = false
	if _, err := g.cycle(ctx, true); err != nil {
		t.Fatal(err)
	}
	g.recovered()
	g.tick()
	st = g.Status()
	if st.RPOAlert || st.State != StateProtected {
		t.Fatalf("after recovery: alert %v state %s", st.RPOAlert, st.State)
	}
	// The abandoned cut's write is in the app-consistent point.
	pts := d.r.Points()
	last := pts[len(pts)-1]
	if last.Kind != replica.KindApp {
		t.Errorf("the quiesced point is %s", last.Kind)
	}
	v, err := d.r.View(last.Seq)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := v.ReadAt(got, 2<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the write of the failed cycle is not in the next point (%v)", err)
	}
	if b, _ := os.ReadFile(marks); string(b) != "pre\npost\n" {
		t.Errorf("quiesce commands ran as %q", b)
	}
	kinds := map[string]bool{}
	for _, e := range events {
		kinds[e.Kind] = true
	}
	for _, k := range []string{"state", "error", "rpo-alert", "rpo-ok"} {
		if !kinds[k] {
			t.Errorf("no %s event in %v", k, events)
		}
	}
	g.Pause(true)
	if st := g.Status(); st.State != StatePaused {
		t.Errorf("paused group in state %s", st.State)
	}
	// Run returns at once with a cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := g.Run(cctx); err != nil {
		t.Fatal(err)
	}
	if st := g.Status(); st.State != StateStopped {
		t.Errorf("stopped group in state %s", st.State)
	}
}

// flakyTarget fails every Begin while fail is set.
type flakyTarget struct {
	Target
	fail bool
}

func (f *flakyTarget) Begin(ctx context.Context) (Txn, error) {
	if f.fail {
		return nil, errTargetDown
	}
	return f.Target.Begin(ctx)
}

var errTargetDown = &targetErr{"the target is down"}

type targetErr struct{ s string }

func (e *targetErr) Error() string { return e.s }

// TestLoopRetention: the policy's retention is applied as points arrive.
func TestLoopRetention(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	d := newLoopDisk(t, dir, "d0", 1<<20, clk)
	ctx := context.Background()
	pol := spec.Policy{RecoveryPointRetention: spec.Duration{Duration: time.Hour}}
	g, err := NewGroup(ctx, GroupOptions{Name: "g", Clock: clk,
		Wait: func(ctx context.Context, d time.Duration) error { clk.Advance(d); return nil },
		VMs:  []VM{{Name: "vm", Policy: pol, Disks: []Disk{{Name: "d0", Tracked: d.tr, Target: Local(d.r), Pruner: d.r}}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := d.tr.WriteAt([]byte{byte(i + 1)}, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		if _, err := g.cycle(ctx, false); err != nil {
			t.Fatal(err)
		}
		clk.Advance(50 * time.Minute)
	}
	var seqs []uint64
	for _, p := range d.r.Points() {
		seqs = append(seqs, p.Seq)
	}
	// Point 1 is 100 minutes old when point 3 arrives: out of the window.
	if len(seqs) != 2 || seqs[0] != 2 {
		t.Fatalf("points after retention of 1h: %v, want [2 3]", seqs)
	}
}
