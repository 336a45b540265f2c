package recovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/recovery"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeExec runs steps by their ID: fn[id] when set, else success. It keeps
// the order steps started and finished in.
type fakeExec struct {
	mu       sync.Mutex
	fn       map[string]func(ctx context.Context, s recovery.Step) (json.RawMessage, error)
	started  []string
	finished []string
	calls    map[string]int
}

func newFake() *fakeExec {
	return &fakeExec{fn: map[string]func(context.Context, recovery.Step) (json.RawMessage, error){}, calls: map[string]int{}}
}

func (f *fakeExec) Execute(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
	f.mu.Lock()
	f.started = append(f.started, s.ID)
	f.calls[s.ID]++
	fn := f.fn[s.ID]
	f.mu.Unlock()
	out, err := json.RawMessage(fmt.Sprintf(`{"step":%q}`, s.ID)), error(nil)
	if fn != nil {
		out, err = fn(ctx, s)
	}
	f.mu.Lock()
	f.finished = append(f.finished, s.ID)
	f.mu.Unlock()
	return out, err
}

func (f *fakeExec) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

type fixture struct {
	d     *recovery.Driver
	store sqlStore
	exec  *fakeExec
	clock *clock.Fake
	sleep []time.Duration
	mu    sync.Mutex
}

func setup(t *testing.T, opts recovery.Options) *fixture {
	t.Helper()
	f := &fixture{exec: newFake(), clock: clock.NewFake(t0)}
	f.store, _ = openStore(t, "", f.clock)
	opts.Clock = f.clock
	if opts.Sleep == nil {
		// Backoff waits move the fake clock instead of sleeping.
		opts.Sleep = func(ctx context.Context, d time.Duration) error {
			f.mu.Lock()
			f.sleep = append(f.sleep, d)
			f.mu.Unlock()
			f.clock.Advance(d)
			return ctx.Err()
		}
	}
	f.d = recovery.New(f.store, f.exec, opts)
	return f
}

func (f *fixture) create(t *testing.T, steps ...recovery.Step) recovery.Job {
	t.Helper()
	j, err := f.d.Create(context.Background(), recovery.Job{Operation: "drill", Plan: "app", Steps: steps})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (f *fixture) events(t *testing.T, id string) []api.Event {
	t.Helper()
	evs, err := f.d.Events(context.Background(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func statuses(j recovery.Job) string {
	var b strings.Builder
	for i, s := range j.Steps {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%s", s.ID, s.Status)
	}
	return b.String()
}

func step(id string, deps ...string) recovery.Step {
	return recovery.Step{ID: id, Action: "test", Resource: "r/" + id, DependsOn: deps}
}

func TestDAGOrderAndEvents(t *testing.T) {
	f := setup(t, recovery.Options{})
	sub, stop := f.d.Subscribe("")
	defer stop()
	j := f.create(t, step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))
	// d sees the outputs of what it depends on.
	var inputs map[string]json.RawMessage
	f.exec.fn["d"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		inputs = s.Inputs
		return json.RawMessage(`{"done":true}`), nil
	}
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.StatusSucceeded || statuses(got) != "a=succeeded b=succeeded c=succeeded d=succeeded" {
		t.Fatalf("job %s: %s", got.Status, statuses(got))
	}
	pos := func(list []string, id string) int { return slices.Index(list, id) }
	for _, dep := range [][2]string{{"a", "b"}, {"a", "c"}, {"b", "d"}, {"c", "d"}} {
		if pos(f.exec.finished, dep[0]) > pos(f.exec.started, dep[1]) {
			t.Errorf("%s started before %s finished: started %v finished %v", dep[1], dep[0], f.exec.started, f.exec.finished)
		}
	}
	if string(inputs["b"]) != `{"step":"b"}` || string(inputs["c"]) != `{"step":"c"}` {
		t.Errorf("inputs of d = %s", inputs)
	}
	stored, err := f.d.Job(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(stored.Step("d").Output) != `{"done":true}` || stored.Step("a").Attempts != 1 || stored.Started.IsZero() || stored.Finished.IsZero() {
		t.Errorf("stored job: %+v", stored)
	}
	// Every transition is an event, stored and streamed alike: created,
	// running, 4 x (running, succeeded), succeeded.
	evs := f.events(t, j.ID)
	if len(evs) != 11 {
		for _, e := range evs {
			t.Log(e)
		}
		t.Fatalf("%d events; want 11", len(evs))
	}
	for i := range evs {
		e := <-sub
		if e != evs[i] {
			t.Fatalf("streamed event %d = %+v; stored %+v", i, e, evs[i])
		}
	}
	if last := evs[len(evs)-1]; last.Kind != api.EventJob || last.Status != api.StatusSucceeded {
		t.Errorf("last event = %+v", last)
	}
}

func TestParallelIsBounded(t *testing.T) {
	f := setup(t, recovery.Options{Parallel: 2})
	var now, peak atomic.Int32
	var steps []recovery.Step
	for i := range 6 {
		id := fmt.Sprint("s", i)
		steps = append(steps, step(id))
		f.exec.fn[id] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
			n := now.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			now.Add(-1)
			return nil, nil
		}
	}
	j := f.create(t, steps...)
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil || got.Status != api.StatusSucceeded {
		t.Fatalf("run: %v %s", err, got.Status)
	}
	if peak.Load() != 2 {
		t.Fatalf("%d steps ran at once; want 2", peak.Load())
	}
}

func TestRetriesWithBackoff(t *testing.T) {
	f := setup(t, recovery.Options{MaxBackoff: 3 * time.Second})
	fails := 4
	f.exec.fn["flaky"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		if fails > 0 {
			fails--
			return nil, errors.New("throttled")
		}
		return nil, nil
	}
	s := step("flaky")
	s.Retries, s.Backoff = 5, time.Second
	j := f.create(t, s)
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil || got.Status != api.StatusSucceeded {
		t.Fatalf("run: %v %s", err, got.Status)
	}
	if a := got.Step("flaky").Attempts; a != 5 {
		t.Errorf("attempts = %d; want 5", a)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}; !slices.Equal(f.sleep, want) {
		t.Errorf("backoff = %v; want %v", f.sleep, want)
	}
	// The step's time runs on the fake clock across the waits.
	if d := got.Step("flaky").Finished.Sub(got.Step("flaky").Started); d != 9*time.Second {
		t.Errorf("step took %s on the fake clock; want 9s", d)
	}
}

func TestRetriesExhaustedFailTheJob(t *testing.T) {
	f := setup(t, recovery.Options{})
	f.exec.fn["bad"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		return nil, errors.New("quota exceeded")
	}
	f.exec.fn["perm"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		return nil, recovery.Permanent(errors.New("no such subnet"))
	}
	bad, perm := step("bad"), step("perm")
	bad.Retries, perm.Retries = 2, 5
	j := f.create(t, bad, step("after", "bad"), step("z", "after"))
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.StatusFailed || statuses(got) != "bad=failed after=skipped z=skipped" {
		t.Fatalf("job %s: %s", got.Status, statuses(got))
	}
	if got.Step("bad").Attempts != 3 || !strings.Contains(got.Error, "quota exceeded") || !strings.Contains(got.Error, "step bad") {
		t.Errorf("attempts %d, job error %q", got.Step("bad").Attempts, got.Error)
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(f.sleep, want) {
		t.Errorf("backoff = %v; want %v", f.sleep, want)
	}
	j2 := f.create(t, perm)
	got, _ = f.d.Run(context.Background(), j2.ID)
	if got.Status != api.StatusFailed || got.Step("perm").Attempts != 1 {
		t.Errorf("permanent error: job %s after %d attempts; want failed after 1", got.Status, got.Step("perm").Attempts)
	}
}

func TestTimeout(t *testing.T) {
	f := setup(t, recovery.Options{})
	f.exec.fn["slow"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s := step("slow")
	s.Timeout, s.Retries = 30*time.Millisecond, 1
	j := f.create(t, s)
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	st := got.Step("slow")
	if got.Status != api.StatusFailed || st.Attempts != 2 || !strings.Contains(st.Error, "attempt 2 timed out after 30ms") {
		t.Fatalf("job %s, step %+v", got.Status, st)
	}
}

func TestCancelLeavesJobToResume(t *testing.T) {
	f := setup(t, recovery.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	block := make(chan struct{})
	f.exec.fn["b"] = func(c context.Context, s recovery.Step) (json.RawMessage, error) {
		if s.Attempts == 1 {
			close(block)
			<-c.Done()
			return nil, c.Err()
		}
		return nil, nil
	}
	j := f.create(t, step("a"), step("b", "a"), step("c", "b"))
	go func() { <-block; cancel() }()
	_, err := f.d.Run(ctx, j.ID)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "jobs resume "+j.ID) {
		t.Fatalf("run: err = %v; want context.Canceled and a hint to resume", err)
	}
	stored, _ := f.d.Job(context.Background(), j.ID)
	if stored.Status != api.StatusRunning || statuses(stored) != "a=succeeded b=running c=pending" {
		t.Fatalf("after cancel: job %s: %s", stored.Status, statuses(stored))
	}
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil || got.Status != api.StatusSucceeded {
		t.Fatalf("resume: %v %s", err, got.Status)
	}
	if f.exec.count("a") != 1 || f.exec.count("b") != 2 || got.Step("b").Attempts != 2 {
		t.Errorf("calls a=%d b=%d, attempts of b %d; want 1, 2, 2", f.exec.count("a"), f.exec.count("b"), got.Step("b").Attempts)
	}
}

func TestManualStepWaitsForAck(t *testing.T) {
	f := setup(t, recovery.Options{})
	m := step("m", "a")
	m.Manual, m.Detail = true, "raise circuit bandwidth"
	j := f.create(t, step("a"), m, step("b", "m"))
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.StatusWaiting || statuses(got) != "a=succeeded m=waiting b=pending" {
		t.Fatalf("job %s: %s", got.Status, statuses(got))
	}
	// A resume without ack changes nothing and records nothing.
	n := len(f.events(t, j.ID))
	if got, _ = f.d.Run(context.Background(), j.ID); got.Status != api.StatusWaiting || len(f.events(t, j.ID)) != n {
		t.Fatalf("resume without ack: job %s, %d events (had %d)", got.Status, len(f.events(t, j.ID)), n)
	}
	got, err = f.d.Resume(context.Background(), j.ID, api.ResumeRequest{Ack: true})
	if err != nil || got.Status != api.StatusSucceeded || statuses(got) != "a=succeeded m=succeeded b=succeeded" {
		t.Fatalf("after ack: %v job %s: %s", err, got.Status, statuses(got))
	}
	if f.exec.count("m") != 0 {
		t.Error("a manual step was executed")
	}
}

func TestAskPolicy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   api.ResumeRequest
		job   api.Status
		steps string
	}{
		{"ack proceeds", api.ResumeRequest{Ack: true}, api.StatusSucceeded, "a=failed b=succeeded"},
		{"abort fails", api.ResumeRequest{Abort: true}, api.StatusFailed, "a=failed b=skipped"},
		{"retry runs again", api.ResumeRequest{Retry: true}, api.StatusSucceeded, "a=succeeded b=succeeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t, recovery.Options{})
			f.exec.fn["a"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
				if s.Attempts <= 2 {
					return nil, errors.New("check failed")
				}
				return nil, nil
			}
			a := step("a")
			a.OnFailure, a.Retries = api.PolicyAsk, 1
			j := f.create(t, a, step("b", "a"))
			got, err := f.d.Run(context.Background(), j.ID)
			if err != nil || got.Status != api.StatusWaiting || statuses(got) != "a=waiting b=pending" || got.Step("a").Error != "check failed" {
				t.Fatalf("run: %v job %s: %s (%q)", err, got.Status, statuses(got), got.Step("a").Error)
			}
			got, err = f.d.Resume(context.Background(), j.ID, tc.req)
			if err != nil || got.Status != tc.job || statuses(got) != tc.steps {
				t.Fatalf("resume %+v: %v job %s: %s", tc.req, err, got.Status, statuses(got))
			}
			if tc.req.Abort && got.Error != "aborted by an operator" {
				t.Errorf("job error = %q", got.Error)
			}
		})
	}
}

func TestProceedPolicy(t *testing.T) {
	f := setup(t, recovery.Options{})
	f.exec.fn["check"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		return nil, errors.New("no answer")
	}
	c := step("check")
	c.OnFailure = api.PolicyProceed
	j := f.create(t, c, step("next", "check"))
	got, err := f.d.Run(context.Background(), j.ID)
	if err != nil || got.Status != api.StatusSucceeded || statuses(got) != "check=failed next=succeeded" {
		t.Fatalf("%v job %s: %s", err, got.Status, statuses(got))
	}
}

func TestAckReachesARunningJob(t *testing.T) {
	f := setup(t, recovery.Options{})
	release := make(chan struct{})
	running := make(chan struct{})
	f.exec.fn["slow"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		close(running)
		<-release
		return nil, nil
	}
	m := step("m")
	m.Manual = true
	j := f.create(t, step("slow"), m, step("end", "slow", "m"))
	done := make(chan recovery.Job)
	go func() {
		got, err := f.d.Run(context.Background(), j.ID)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	<-running
	// The ack is handed to the run in progress; a background Start returns
	// at once with the job as it stands.
	cur, err := f.d.Start(context.Background(), j.ID, api.ResumeRequest{Ack: true})
	if err != nil || cur.Status != api.StatusRunning {
		t.Fatalf("start with ack: %v, job %s", err, cur.Status)
	}
	if s, _ := f.d.Job(context.Background(), j.ID); s.Step("m").Status != api.StatusSucceeded {
		t.Fatalf("m = %s after ack", s.Step("m").Status)
	}
	close(release)
	if got := <-done; got.Status != api.StatusSucceeded {
		t.Fatalf("job %s: %s", got.Status, statuses(got))
	}
}

func TestAbortCancelsRunningSteps(t *testing.T) {
	f := setup(t, recovery.Options{})
	running := make(chan struct{})
	f.exec.fn["slow"] = func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		close(running)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	j := f.create(t, step("slow"), step("next", "slow"))
	if _, err := f.d.Start(context.Background(), j.ID, api.ResumeRequest{}); err != nil {
		t.Fatal(err)
	}
	<-running
	got, err := f.d.Resume(context.Background(), j.ID, api.ResumeRequest{Abort: true})
	if err != nil || got.Status != api.StatusFailed || statuses(got) != "slow=failed next=skipped" {
		t.Fatalf("abort: %v job %s: %s", err, got.Status, statuses(got))
	}
	f.d.Wait()
}

func TestFinishedJobResumeDoesNothing(t *testing.T) {
	f := setup(t, recovery.Options{})
	j := f.create(t, step("a"))
	first, err := f.d.Run(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	n := len(f.events(t, j.ID))
	for _, req := range []api.ResumeRequest{{}, {Ack: true}, {Abort: true}} {
		again, err := f.d.Resume(context.Background(), j.ID, req)
		if err != nil || again.Status != api.StatusSucceeded || !again.Finished.Equal(first.Finished) {
			t.Fatalf("resume %+v: %v %s", req, err, again.Status)
		}
	}
	if len(f.events(t, j.ID)) != n || f.exec.count("a") != 1 {
		t.Fatal("resuming a finished job recorded or ran something")
	}
}

func TestCreateRejectsBadJobs(t *testing.T) {
	f := setup(t, recovery.Options{})
	for name, steps := range map[string][]recovery.Step{
		"no steps":     nil,
		"duplicate":    {step("a"), step("a")},
		"unknown dep":  {step("a", "zz")},
		"self":         {step("a", "a")},
		"cycle":        {step("a", "c"), step("b", "a"), step("c", "b")},
		"bad policy":   {{ID: "a", OnFailure: "maybe"}},
		"negative try": {{ID: "a", Retries: -1}},
	} {
		_, err := f.d.Create(context.Background(), recovery.Job{Operation: "drill", Steps: steps})
		if !errors.Is(err, recovery.ErrInvalid) {
			t.Errorf("%s: err = %v; want ErrInvalid", name, err)
		}
	}
	if _, err := f.d.Run(context.Background(), "nope"); !errors.Is(err, recovery.ErrNotFound) {
		t.Errorf("run unknown job: err = %v; want ErrNotFound", err)
	}
	if js, _ := f.d.Jobs(context.Background(), recovery.JobFilter{}); len(js) != 0 {
		t.Errorf("bad jobs were stored: %+v", js)
	}
}

func TestStepsFromRunbook(t *testing.T) {
	steps := recovery.StepsFromRunbook([]netplan.Action{
		{ID: "a", Action: netplan.ActCreateVNet, Resource: "v"},
		{ID: "b", Action: netplan.ActManual, Resource: "circuits/c", DependsOn: []string{"a"}, Detail: "raise"},
		{ID: "c", Action: netplan.ActDeleteConn, Resource: "x", OnFailure: "ask", DependsOn: []string{"b"}},
	})
	if len(steps) != 3 || steps[0].Manual || !steps[1].Manual || steps[2].OnFailure != "ask" || steps[2].DependsOn[0] != "b" {
		t.Fatalf("steps = %+v", steps)
	}
	f := setup(t, recovery.Options{})
	if _, err := f.d.Create(context.Background(), recovery.Job{Operation: "failover", Steps: steps}); err != nil {
		t.Fatal(err)
	}
}

func TestStartUnfinished(t *testing.T) {
	f := setup(t, recovery.Options{})
	j1 := f.create(t, step("a"))
	m := step("m")
	m.Manual = true
	j2 := f.create(t, m)
	if _, err := f.d.Run(context.Background(), j2.ID); err != nil {
		t.Fatal(err)
	}
	ids, err := f.d.StartUnfinished(context.Background())
	if err != nil || !slices.Equal(ids, []string{j1.ID}) {
		t.Fatalf("started %v, %v; want [%s]", ids, err, j1.ID)
	}
	f.d.Wait()
	if got, _ := f.d.Job(context.Background(), j1.ID); got.Status != api.StatusSucceeded {
		t.Fatalf("job %s", got.Status)
	}
}
