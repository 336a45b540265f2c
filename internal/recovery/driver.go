package recovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/clock"
)

// Executor does what a step says. It is declared here and provided by the
// caller (the operations dispatch on Step.Action).
//
// Contract: Execute is idempotent. It may be called again for a step whose
// earlier call had its effect (the daemon died before recording success),
// and must then succeed without doing it twice. It returns when ctx is done.
// Its output is stored with the step and handed to the steps that depend
// on it (Step.Inputs). An error wrapped with Permanent is not retried.
type Executor interface {
	Execute(ctx context.Context, s Step) (json.RawMessage, error)
}

// ExecutorFunc adapts a function to Executor.
type ExecutorFunc func(ctx context.Context, s Step) (json.RawMessage, error)

// Execute calls f.
func (f ExecutorFunc) Execute(ctx context.Context, s Step) (json.RawMessage, error) { return f(ctx, s) }

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying cannot fix (bad input, a
// resource that refuses): the step fails at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Options tune a Driver. Zero values pick the defaults.
type Options struct {
	Clock      clock.Clock
	Parallel   int           // steps that run at once; default 4
	MaxBackoff time.Duration // cap of the doubling wait between attempts; default 5m
	// Sleep waits d or until ctx is done; tests replace it to drive
	// backoff with a fake clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// NewID names a new job; default: the creation time and random bytes.
	NewID func() string
	// Report builds a finished job's report, stored with its final status.
	Report func(Job) json.RawMessage
	// Context bounds the runs started by Start; default Background.
	Context context.Context
	// OnError receives the error that ended a run started by Start (the
	// job's own failures are in the job, not here: this is the store
	// failing or the context ending).
	OnError func(jobID string, err error)
}

// Driver runs jobs. It is safe for concurrent use; one Driver per store.
type Driver struct {
	store  Store
	exec   Executor
	opts   Options
	clock  clock.Clock
	events broker

	mu     sync.Mutex
	active map[string]*run
	bg     sync.WaitGroup
}

// New returns a driver that keeps jobs in store and runs steps with exec.
func New(store Store, exec Executor, opts Options) *Driver {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	d := &Driver{store: store, exec: exec, opts: opts, clock: opts.Clock, active: map[string]*run{}}
	if d.opts.NewID == nil {
		d.opts.NewID = d.newID
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Driver) newID() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return d.clock.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// Subscribe returns the events of a job ("" for all jobs) as they are
// stored, and a function to stop. A subscriber that falls far behind finds
// its channel closed: it reads the rest with Events and subscribes again.
func (d *Driver) Subscribe(job string) (<-chan api.Event, func()) { return d.events.subscribe(job) }

// Observe calls fn with every event, synchronously, after it is stored.
// fn must be quick and must not call back into the driver's runs.
func (d *Driver) Observe(fn func(api.Event)) { d.events.observe(fn) }

// Create validates a new job and stores it, pending. It runs nothing.
func (d *Driver) Create(ctx context.Context, j Job) (Job, error) {
	if err := validate(j.Steps); err != nil {
		return Job{}, fmt.Errorf("recovery: create %s job: %w", j.Operation, err)
	}
	if j.ID == "" {
		j.ID = d.opts.NewID()
	}
	if j.Params == nil {
		j.Params = json.RawMessage("{}")
	}
	j.Status, j.Created, j.Started, j.Finished, j.Report, j.Error = api.StatusPending, d.clock.Now(), time.Time{}, time.Time{}, nil, ""
	j.Steps = append([]Step(nil), j.Steps...)
	for i := range j.Steps {
		s := &j.Steps[i]
		s.DependsOn = append([]string(nil), s.DependsOn...)
		if s.OnFailure == "" {
			s.OnFailure = api.PolicyStop
		}
		if s.Retries > 0 && s.Backoff == 0 {
			s.Backoff = time.Second
		}
		s.Status, s.Attempts, s.Started, s.Finished, s.Error, s.Output, s.Inputs = api.StatusPending, 0, time.Time{}, time.Time{}, "", nil, nil
	}
	ev, err := d.store.Create(ctx, j, api.Event{Time: j.Created, Job: j.ID, Kind: api.EventJob, Status: api.StatusPending,
		Message: fmt.Sprintf("%s of %s created with %d steps", j.Operation, j.Plan, len(j.Steps))})
	if err != nil {
		return Job{}, fmt.Errorf("recovery: create %s job: %w", j.Operation, err)
	}
	d.events.publish(ev)
	return j, nil
}

// Job reads a job with its steps.
func (d *Driver) Job(ctx context.Context, id string) (Job, error) {
	j, err := d.store.Load(ctx, id)
	if err != nil {
		return Job{}, fmt.Errorf("recovery: job %s: %w", id, err)
	}
	return j, nil
}

// Jobs lists jobs, newest first.
func (d *Driver) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	js, err := d.store.Jobs(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("recovery: list jobs: %w", err)
	}
	return js, nil
}

// Events lists the stored events of a job after sequence number after.
func (d *Driver) Events(ctx context.Context, id string, after int64) ([]api.Event, error) {
	evs, err := d.store.Events(ctx, id, after)
	if err != nil {
		return nil, fmt.Errorf("recovery: events of job %s: %w", id, err)
	}
	return evs, nil
}

// Run runs a job until it is finished, waits for an operator, or ctx ends.
// It is Resume with nothing to release.
func (d *Driver) Run(ctx context.Context, id string) (Job, error) {
	return d.Resume(ctx, id, api.ResumeRequest{})
}

// Resume applies req to a job (ack, retry, abort) and runs it until it is
// finished, waits for an operator, or ctx ends; it returns the job as it
// then stands. After a crash, steps that were running run again and steps
// that succeeded do not. A finished job is returned as it is: resuming it
// does nothing. When ctx ends the job stays as stored, to be resumed.
//
// If the job is already running in this driver, req is handed to that run
// and Resume waits for it to stop.
func (d *Driver) Resume(ctx context.Context, id string, req api.ResumeRequest) (Job, error) {
	r, j, err := d.begin(ctx, id, req, true)
	if err != nil || r == nil {
		return j, err
	}
	return r.loop(ctx)
}

// Start is Resume in the background, bounded by Options.Context: it
// returns the job once req is applied (and stored) and the run goes on.
func (d *Driver) Start(ctx context.Context, id string, req api.ResumeRequest) (Job, error) {
	r, j, err := d.begin(ctx, id, req, false)
	if err != nil || r == nil {
		return j, err
	}
	j = r.snapshot()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		if _, err := r.loop(d.opts.Context); err != nil && d.opts.OnError != nil {
			d.opts.OnError(id, err)
		}
	}()
	return j, nil
}

// StartUnfinished starts every job that was pending or running when the
// daemon stopped, and returns their IDs. Waiting jobs keep waiting.
func (d *Driver) StartUnfinished(ctx context.Context) ([]string, error) {
	js, err := d.store.Jobs(ctx, JobFilter{Status: []api.Status{api.StatusPending, api.StatusRunning}})
	if err != nil {
		return nil, fmt.Errorf("recovery: list unfinished jobs: %w", err)
	}
	var ids []string
	for i := len(js) - 1; i >= 0; i-- { // oldest first
		if _, err := d.Start(ctx, js[i].ID, api.ResumeRequest{}); err != nil {
			return ids, err
		}
		ids = append(ids, js[i].ID)
	}
	return ids, nil
}

// Wait waits for the runs started by Start to stop.
func (d *Driver) Wait() { d.bg.Wait() }

// begin applies req to the job. It returns a run to loop when this caller
// owns the job's run, or nil and the job when the job is finished or
// another run has it (then, if wait, once that run has stopped).
func (d *Driver) begin(ctx context.Context, id string, req api.ResumeRequest, wait bool) (*run, Job, error) {
	for {
		d.mu.Lock()
		other := d.active[id]
		if other == nil {
			r := &run{d: d, id: id, control: make(chan control), done: make(chan struct{})}
			d.active[id] = r
			d.mu.Unlock()
			finished, err := r.prepare(ctx, req)
			if err != nil || finished {
				j := r.job
				r.release()
				if err != nil {
					return nil, Job{}, err
				}
				return nil, j, nil
			}
			return r, Job{}, nil
		}
		d.mu.Unlock()
		if err := other.send(ctx, req); errors.Is(err, errGone) {
			continue // it stopped meanwhile: take the job over
		} else if err != nil {
			return nil, Job{}, err
		}
		if !wait {
			j, err := d.Job(ctx, id)
			return nil, j, err
		}
		select {
		case <-other.done:
		case <-ctx.Done():
			return nil, Job{}, fmt.Errorf("recovery: job %s: %w", id, ctx.Err())
		}
		j, err := d.Job(ctx, id)
		return nil, j, err
	}
}

// backoff is the wait before attempt n+1 after attempt n (n counted
// within this run) failed.
func (d *Driver) backoff(s *Step, n int) time.Duration {
	w := s.Backoff
	for i := 1; i < n && w < d.opts.MaxBackoff; i++ {
		w *= 2
	}
	return min(w, d.opts.MaxBackoff)
}
