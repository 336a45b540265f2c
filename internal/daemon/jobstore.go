package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/state"
)

// JobStore is recovery.Store over the state database. recovery declares
// the interface and state knows nothing of recovery, so the daemon adapts
// one to the other here, where implementations are wired.
type JobStore struct{ DB *state.DB }

func (s JobStore) Create(ctx context.Context, j recovery.Job, ev api.Event) (api.Event, error) {
	var out state.Event
	err := s.DB.Update(ctx, func(tx *state.Tx) error {
		steps := make([]state.Step, len(j.Steps))
		for i, st := range j.Steps {
			steps[i] = toStateStep(j.ID, st)
		}
		if err := tx.InsertJob(toStateJob(j), steps); err != nil {
			return err
		}
		var err error
		out, err = tx.AppendEvent(toStateEvent(ev))
		return err
	})
	return fromStateEvent(out), err
}

func (s JobStore) Save(ctx context.Context, tr recovery.Transition) (api.Event, error) {
	var out state.Event
	err := s.DB.Update(ctx, func(tx *state.Tx) error {
		if tr.Job != nil {
			if err := tx.UpdateJob(toStateJob(*tr.Job)); err != nil {
				return err
			}
		}
		if tr.Step != nil {
			if err := tx.UpdateStep(toStateStep(tr.JobID, *tr.Step)); err != nil {
				return err
			}
		}
		var err error
		out, err = tx.AppendEvent(toStateEvent(tr.Event))
		return err
	})
	return fromStateEvent(out), err
}

func (s JobStore) Load(ctx context.Context, id string) (recovery.Job, error) {
	j, steps, err := s.DB.Job(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return recovery.Job{}, fmt.Errorf("%w: %w", recovery.ErrNotFound, err)
	}
	if err != nil {
		return recovery.Job{}, err
	}
	out := fromStateJob(j)
	for _, st := range steps {
		out.Steps = append(out.Steps, fromStateStep(st))
	}
	return out, nil
}

func (s JobStore) Jobs(ctx context.Context, f recovery.JobFilter) ([]recovery.Job, error) {
	sf := state.JobFilter{Operation: f.Operation, Plan: f.Plan, Limit: f.Limit}
	for _, st := range f.Status {
		sf.Status = append(sf.Status, string(st))
	}
	js, err := s.DB.Jobs(ctx, sf)
	if err != nil {
		return nil, err
	}
	var out []recovery.Job
	for _, j := range js {
		out = append(out, fromStateJob(j))
	}
	return out, nil
}

func (s JobStore) Events(ctx context.Context, job string, after int64) ([]api.Event, error) {
	evs, err := s.DB.Events(ctx, job, after, 0)
	if err != nil {
		return nil, err
	}
	var out []api.Event
	for _, e := range evs {
		out = append(out, fromStateEvent(e))
	}
	return out, nil
}

func toStateJob(j recovery.Job) state.Job {
	return state.Job{ID: j.ID, Operation: j.Operation, Plan: j.Plan, Status: string(j.Status), Created: j.Created,
		Started: j.Started, Finished: j.Finished, Params: j.Params, Report: j.Report, Error: j.Error}
}

func fromStateJob(j state.Job) recovery.Job {
	return recovery.Job{ID: j.ID, Operation: j.Operation, Plan: j.Plan, Status: api.Status(j.Status), Created: j.Created,
		Started: j.Started, Finished: j.Finished, Params: j.Params, Report: j.Report, Error: j.Error}
}

func toStateStep(job string, s recovery.Step) state.Step {
	return state.Step{JobID: job, ID: s.ID, Action: s.Action, Resource: s.Resource, Detail: s.Detail, DependsOn: s.DependsOn,
		Manual: s.Manual, Policy: s.OnFailure, Timeout: s.Timeout, Retries: s.Retries, Backoff: s.Backoff, Params: s.Params,
		Status: string(s.Status), Attempts: s.Attempts, Started: s.Started, Finished: s.Finished, Error: s.Error, Output: s.Output}
}

func fromStateStep(s state.Step) recovery.Step {
	return recovery.Step{ID: s.ID, Action: s.Action, Resource: s.Resource, Detail: s.Detail, DependsOn: s.DependsOn,
		Manual: s.Manual, OnFailure: s.Policy, Timeout: s.Timeout, Retries: s.Retries, Backoff: s.Backoff, Params: s.Params,
		Status: api.Status(s.Status), Attempts: s.Attempts, Started: s.Started, Finished: s.Finished, Error: s.Error, Output: s.Output}
}

func toStateEvent(e api.Event) state.Event {
	return state.Event{Seq: e.Seq, Time: e.Time, Job: e.Job, Step: e.Step, Kind: e.Kind, Status: string(e.Status), Message: e.Message}
}

func fromStateEvent(e state.Event) api.Event {
	return api.Event{Seq: e.Seq, Time: e.Time, Job: e.Job, Step: e.Step, Kind: e.Kind, Status: api.Status(e.Status), Message: e.Message}
}
