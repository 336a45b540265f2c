package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/api"
)

// errGone: the run a request was handed to has stopped.
var errGone = errors.New("run stopped")

// abortMessage is the job error an abort leaves. A job that is not
// finished but has an error was aborted, and its run finishes the abort.
const abortMessage = "aborted by an operator"

type control struct {
	req   api.ResumeRequest
	reply chan error
}

// result is what a worker (or a backoff timer) tells the scheduler.
type result struct {
	id          string
	out         json.RawMessage
	err         error
	interrupted bool // the run's context ended: record nothing
	retry       bool // the backoff is over: start the next attempt
}

// run is one job being driven. Its fields belong to the goroutine that
// runs prepare and then loop; other goroutines talk to it through control.
type run struct {
	d       *Driver
	id      string
	control chan control
	done    chan struct{}

	job       Job
	idx       map[string]int
	restarted map[string]bool // running when loaded: the last run was interrupted
	first     map[string]int  // first attempt number of each step in this run
	aborted   bool

	running    int // workers and backoff timers out
	results    chan result
	workCtx    context.Context
	cancelWork context.CancelFunc
}

func (r *run) release() {
	r.d.mu.Lock()
	delete(r.d.active, r.id)
	r.d.mu.Unlock()
	close(r.done)
}

// send hands req to the run and returns once it is applied.
func (r *run) send(ctx context.Context, req api.ResumeRequest) error {
	if req == (api.ResumeRequest{}) {
		return nil
	}
	c := control{req: req, reply: make(chan error, 1)}
	select {
	case r.control <- c:
	case <-r.done:
		return errGone
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *run) snapshot() Job {
	j := r.job
	j.Steps = slices.Clone(j.Steps)
	return j
}

// prepare loads the job and applies req. It reports finished for a job
// that is already over: then nothing is done.
func (r *run) prepare(ctx context.Context, req api.ResumeRequest) (finished bool, err error) {
	j, err := r.d.store.Load(ctx, r.id)
	if err != nil {
		return false, fmt.Errorf("recovery: resume job %s: %w", r.id, err)
	}
	r.job = j
	if j.Status.Finished() {
		return true, nil
	}
	r.idx = make(map[string]int, len(j.Steps))
	r.restarted, r.first = map[string]bool{}, map[string]int{}
	for i := range r.job.Steps {
		s := &r.job.Steps[i]
		r.idx[s.ID] = i
		if s.Status == api.StatusRunning {
			// The last run died with it running: it runs again. Steps are
			// idempotent, so an effect it had happens once.
			r.restarted[s.ID] = true
			s.Status = api.StatusPending
		}
	}
	r.aborted = j.Error != ""
	r.results = make(chan result, len(j.Steps))
	return false, r.apply(ctx, req)
}

// apply releases waiting steps (ack, retry) or aborts the job.
func (r *run) apply(ctx context.Context, req api.ResumeRequest) error {
	if req.Ack && req.Retry {
		return fmt.Errorf("recovery: job %s: ack and retry together: choose one: %w", r.id, ErrInvalid)
	}
	if req.Abort {
		if r.aborted {
			return nil
		}
		r.aborted = true
		r.job.Error = abortMessage
		if err := r.saveJob(ctx, "abort requested: running steps are cancelled, the rest are skipped"); err != nil {
			return err
		}
		if r.cancelWork != nil {
			r.cancelWork()
		}
		return nil
	}
	if !req.Ack && !req.Retry {
		return nil
	}
	for i := range r.job.Steps {
		s := &r.job.Steps[i]
		if s.Status != api.StatusWaiting {
			continue
		}
		var msg string
		switch {
		case s.Manual && req.Ack:
			s.Status, s.Finished = api.StatusSucceeded, r.d.clock.Now()
			msg = "acknowledged by an operator"
		case s.Manual:
			continue // nothing to retry: the operator does it
		case req.Ack:
			s.Status = api.StatusFailed
			msg = "acknowledged by an operator: the job goes on without it"
		default:
			s.Status, s.Finished = api.StatusPending, time.Time{}
			delete(r.first, s.ID)
			msg = "retry requested by an operator"
		}
		if err := r.saveStep(ctx, s, msg); err != nil {
			return err
		}
	}
	return nil
}

// loop runs steps until nothing more can run, then records how the job
// stands. It returns an error when the store fails or ctx ends; the job is
// then left as stored, to be resumed.
func (r *run) loop(ctx context.Context) (Job, error) {
	defer r.release()
	r.workCtx, r.cancelWork = context.WithCancel(ctx)
	defer r.cancelWork()
	if r.aborted {
		r.cancelWork()
	}
	for {
		if err := r.schedule(ctx); err != nil {
			return r.stop(err)
		}
		if r.running == 0 {
			break
		}
		select {
		case res := <-r.results:
			r.running--
			if err := r.handle(ctx, res); err != nil {
				return r.stop(err)
			}
		case c := <-r.control:
			err := r.apply(ctx, c.req)
			c.reply <- err
			if err != nil && !errors.Is(err, ErrInvalid) {
				return r.stop(err)
			}
		case <-ctx.Done():
			return r.stop(fmt.Errorf("recovery: job %s interrupted: %w; resume it with `standby jobs resume %s`", r.id, ctx.Err(), r.id))
		}
	}
	if err := r.finish(ctx); err != nil {
		return r.snapshot(), err
	}
	return r.snapshot(), nil
}

// stop cancels what runs and waits for it, recording nothing more.
func (r *run) stop(err error) (Job, error) {
	r.cancelWork()
	for r.running > 0 {
		<-r.results
		r.running--
	}
	return r.snapshot(), err
}

// fatal reports whether the job is failing: aborted, or a step failed under
// the stop policy. Then nothing new starts.
func (r *run) fatal() bool {
	if r.aborted {
		return true
	}
	for _, s := range r.job.Steps {
		if s.Status == api.StatusFailed && s.OnFailure == api.PolicyStop {
			return true
		}
	}
	return false
}

// depsMet: every dependency succeeded, or failed under a policy that lets
// the job go on (proceed, or ask and acked).
func (r *run) depsMet(s *Step) bool {
	for _, d := range s.DependsOn {
		dep := r.job.Steps[r.idx[d]]
		ok := dep.Status == api.StatusSucceeded || (dep.Status == api.StatusFailed && dep.OnFailure != api.PolicyStop)
		if !ok {
			return false
		}
	}
	return true
}

// schedule starts the steps that can run, in list order, up to the bound;
// manual steps whose dependencies are met start waiting.
func (r *run) schedule(ctx context.Context) error {
	if r.fatal() {
		return nil
	}
	for i := range r.job.Steps {
		s := &r.job.Steps[i]
		if s.Status != api.StatusPending || !r.depsMet(s) {
			continue
		}
		if s.Manual {
			s.Status = api.StatusWaiting
			msg := "waiting for an operator"
			if s.Detail != "" {
				msg += ": " + s.Detail
			}
			if err := r.saveStep(ctx, s, msg+"; when it is done, resume the job with --ack"); err != nil {
				return err
			}
			continue
		}
		if r.running >= r.d.opts.Parallel {
			continue
		}
		if err := r.launch(ctx, s, false); err != nil {
			return err
		}
	}
	return nil
}

// launch records the next attempt of s as running, then starts it.
func (r *run) launch(ctx context.Context, s *Step, retry bool) error {
	if !retry {
		r.first[s.ID] = s.Attempts + 1
	}
	s.Attempts++
	s.Status, s.Finished = api.StatusRunning, time.Time{}
	if s.Started.IsZero() {
		s.Started = r.d.clock.Now()
	}
	msg := "started"
	switch {
	case r.restarted[s.ID]:
		msg = fmt.Sprintf("attempt %d, again after an interruption", s.Attempts)
		delete(r.restarted, s.ID)
	case s.Attempts > 1:
		msg = fmt.Sprintf("attempt %d", s.Attempts)
	}
	if err := r.saveStep(ctx, s, msg); err != nil {
		return err
	}
	cp := *s
	cp.DependsOn = slices.Clone(s.DependsOn)
	cp.Inputs = make(map[string]json.RawMessage, len(s.DependsOn))
	for _, d := range s.DependsOn {
		cp.Inputs[d] = r.job.Steps[r.idx[d]].Output
	}
	r.running++
	go r.work(cp)
	return nil
}

// work runs one attempt of s and reports it.
func (r *run) work(s Step) {
	actx, cancel := r.workCtx, context.CancelFunc(func() {})
	if s.Timeout > 0 {
		actx, cancel = context.WithTimeout(r.workCtx, s.Timeout)
	}
	out, err := r.execute(actx, s)
	timedOut := err != nil && r.workCtx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded)
	cancel()
	switch {
	case err == nil:
		r.results <- result{id: s.ID, out: out}
	case r.workCtx.Err() != nil:
		r.results <- result{id: s.ID, interrupted: true}
	case timedOut:
		r.results <- result{id: s.ID, err: fmt.Errorf("attempt %d timed out after %s: %w", s.Attempts, s.Timeout, err)}
	default:
		r.results <- result{id: s.ID, err: err}
	}
}

// execute calls the executor, turning a panic into a permanent error so
// that one bad step cannot take the daemon down.
func (r *run) execute(ctx context.Context, s Step) (out json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = Permanent(fmt.Errorf("step %s (%s) panicked: %v", s.ID, s.Action, p))
		}
	}()
	return r.d.exec.Execute(ctx, s)
}

// handle records what a worker or timer reported.
func (r *run) handle(ctx context.Context, res result) error {
	s := &r.job.Steps[r.idx[res.id]]
	now := r.d.clock.Now()
	switch {
	case res.interrupted && r.aborted:
		s.Status, s.Finished, s.Error = api.StatusFailed, now, abortMessage+" while it ran"
		return r.saveStep(ctx, s, "cancelled: "+abortMessage)
	case res.interrupted:
		return nil // ctx ended: the step stays running in the store and runs again on resume
	case res.retry:
		if r.fatal() {
			s.Status, s.Finished = api.StatusFailed, now
			return r.saveStep(ctx, s, "not retried: the job is failing")
		}
		return r.launch(ctx, s, true)
	case res.err == nil:
		s.Status, s.Finished, s.Output, s.Error = api.StatusSucceeded, now, res.out, ""
		return r.saveStep(ctx, s, fmt.Sprintf("succeeded in %s", round(now.Sub(s.Started))))
	}
	s.Error = res.err.Error()
	if last := r.first[s.ID] + s.Retries; !IsPermanent(res.err) && s.Attempts < last && !r.fatal() {
		wait := r.d.backoff(s, s.Attempts-r.first[s.ID]+1)
		if err := r.saveStep(ctx, s, fmt.Sprintf("attempt %d failed: %v; retrying in %s", s.Attempts, res.err, wait)); err != nil {
			return err
		}
		r.running++
		id := s.ID
		go func() {
			if err := r.d.opts.Sleep(r.workCtx, wait); err != nil {
				r.results <- result{id: id, interrupted: true}
				return
			}
			r.results <- result{id: id, retry: true}
		}()
		return nil
	}
	s.Finished = now
	switch s.OnFailure {
	case api.PolicyAsk:
		s.Status = api.StatusWaiting
		return r.saveStep(ctx, s, fmt.Sprintf("failed: %v; waiting for an operator: resume with --ack to go on without it, --retry to run it again, or --abort", res.err))
	case api.PolicyProceed:
		s.Status = api.StatusFailed
		return r.saveStep(ctx, s, fmt.Sprintf("failed: %v; the job goes on (policy proceed)", res.err))
	default:
		s.Status = api.StatusFailed
		return r.saveStep(ctx, s, fmt.Sprintf("failed: %v", res.err))
	}
}

// finish records how the job stands once nothing runs: failed (the rest
// skipped), succeeded, or waiting for an operator.
func (r *run) finish(ctx context.Context) error {
	now := r.d.clock.Now()
	if r.fatal() {
		cause := r.job.Error
		if cause == "" {
			for _, s := range r.job.Steps {
				if s.Status == api.StatusFailed && s.OnFailure == api.PolicyStop {
					cause = fmt.Sprintf("step %s (%s %s) failed: %s", s.ID, s.Action, s.Resource, s.Error)
					break
				}
			}
		}
		for i := range r.job.Steps {
			s := &r.job.Steps[i]
			switch {
			case s.Status == api.StatusPending || (s.Status == api.StatusWaiting && s.Manual) || s.Status == api.StatusRunning:
				s.Status, s.Finished = api.StatusSkipped, now
			case s.Status == api.StatusWaiting:
				s.Status = api.StatusFailed
			default:
				continue
			}
			if err := r.saveStep(ctx, s, "not run: the job failed: "+cause); err != nil {
				return err
			}
		}
		r.job.Status, r.job.Finished, r.job.Error = api.StatusFailed, now, cause
		r.report()
		return r.saveJob(ctx, "failed: "+cause)
	}
	var waiting []string
	done := true
	for _, s := range r.job.Steps {
		if !s.Status.Done() {
			done = false
		}
		if s.Status == api.StatusWaiting {
			waiting = append(waiting, s.ID)
		}
	}
	if done {
		r.job.Status, r.job.Finished = api.StatusSucceeded, now
		r.report()
		return r.saveJob(ctx, fmt.Sprintf("succeeded in %s", round(now.Sub(r.job.Started))))
	}
	if r.job.Status == api.StatusWaiting {
		return nil // nothing changed
	}
	r.job.Status = api.StatusWaiting
	return r.saveJob(ctx, fmt.Sprintf("waiting for an operator on %s; resume with --ack, --retry or --abort", strings.Join(waiting, ", ")))
}

func (r *run) report() {
	if r.d.opts.Report != nil {
		r.job.Report = r.d.opts.Report(r.snapshot())
	}
}

// ensureRunning records the job as running before the first step moves.
func (r *run) ensureRunning(ctx context.Context) error {
	if r.job.Status == api.StatusRunning {
		return nil
	}
	msg := "resumed"
	if r.job.Started.IsZero() {
		r.job.Started = r.d.clock.Now()
		msg = "started"
	}
	r.job.Status = api.StatusRunning
	return r.saveJob(ctx, msg)
}

func (r *run) saveJob(ctx context.Context, msg string) error {
	j := r.job
	j.Steps = nil
	return r.save(ctx, Transition{JobID: r.id, Job: &j,
		Event: api.Event{Job: r.id, Kind: api.EventJob, Status: r.job.Status, Message: msg}})
}

func (r *run) saveStep(ctx context.Context, s *Step, msg string) error {
	if err := r.ensureRunning(ctx); err != nil {
		return err
	}
	cp := *s
	return r.save(ctx, Transition{JobID: r.id, Step: &cp,
		Event: api.Event{Job: r.id, Step: s.ID, Kind: api.EventStep, Status: s.Status, Message: msg}})
}

// save stores a transition, then publishes its event. Nothing is acted on
// before save returns.
func (r *run) save(ctx context.Context, tr Transition) error {
	tr.Event.Time = r.d.clock.Now()
	ev, err := r.d.store.Save(ctx, tr)
	if err != nil {
		return fmt.Errorf("recovery: job %s: record %q: %w", r.id, tr.Event.Message, err)
	}
	r.d.events.publish(ev)
	return nil
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
