package recovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/netplan"
)

// Error kinds, for errors.Is. The server maps them to HTTP statuses and the
// command line to exit codes.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
	// ErrConflict: the request contradicts the job's state (resuming a job
	// that is running elsewhere, acking a finished job).
	ErrConflict = errors.New("conflict")
)

// Step is one step of a job: its definition, fixed when the job is created,
// and its state, which the driver moves.
type Step struct {
	ID        string
	Action    string // what the executor does, e.g. netplan.ActCreateSubnet
	Resource  string // what it does it to
	Detail    string // for a human
	DependsOn []string
	// Manual steps are done by an operator: the driver does not execute
	// them; they wait until acked.
	Manual bool
	// OnFailure is api.PolicyStop (the default), PolicyAsk or PolicyProceed.
	OnFailure string
	Timeout   time.Duration // of one attempt; 0: none
	Retries   int           // attempts after the first
	Backoff   time.Duration // wait before the first retry; doubles each time
	Params    json.RawMessage

	Status   api.Status
	Attempts int
	Started  time.Time
	Finished time.Time
	Error    string
	Output   json.RawMessage

	// Inputs holds the outputs of the steps this one depends on, by step
	// ID. It is filled when the step runs and not stored.
	Inputs map[string]json.RawMessage
}

// Job is one run of an operation.
type Job struct {
	ID        string
	Operation string
	Plan      string
	Status    api.Status
	Created   time.Time
	Started   time.Time
	Finished  time.Time
	Params    json.RawMessage
	Report    json.RawMessage
	Error     string
	Steps     []Step
}

// Step returns the step with that ID, or nil.
func (j *Job) Step(id string) *Step {
	for i := range j.Steps {
		if j.Steps[i].ID == id {
			return &j.Steps[i]
		}
	}
	return nil
}

// validate checks a new job's steps: unique IDs, known dependencies, no
// cycle, known policies, no negative numbers.
func validate(steps []Step) error {
	if len(steps) == 0 {
		return fmt.Errorf("a job needs at least one step: %w", ErrInvalid)
	}
	index := make(map[string]int, len(steps))
	for i, s := range steps {
		if s.ID == "" {
			return fmt.Errorf("step %d has no ID: %w", i, ErrInvalid)
		}
		if _, dup := index[s.ID]; dup {
			return fmt.Errorf("step %s appears twice: %w", s.ID, ErrInvalid)
		}
		index[s.ID] = i
		switch s.OnFailure {
		case "", api.PolicyStop, api.PolicyAsk, api.PolicyProceed:
		default:
			return fmt.Errorf("step %s: onFailure %q: want stop, ask or proceed: %w", s.ID, s.OnFailure, ErrInvalid)
		}
		if s.Retries < 0 || s.Timeout < 0 || s.Backoff < 0 {
			return fmt.Errorf("step %s: negative retries, timeout or backoff: %w", s.ID, ErrInvalid)
		}
	}
	for _, s := range steps {
		for _, d := range s.DependsOn {
			if _, ok := index[d]; !ok {
				return fmt.Errorf("step %s depends on %s, which is not a step of the job: %w", s.ID, d, ErrInvalid)
			}
			if d == s.ID {
				return fmt.Errorf("step %s depends on itself: %w", s.ID, ErrInvalid)
			}
		}
	}
	// Kahn: whatever is left with dependencies is on a cycle.
	indeg := make([]int, len(steps))
	users := make([][]int, len(steps))
	for i, s := range steps {
		for _, d := range s.DependsOn {
			indeg[i]++
			users[index[d]] = append(users[index[d]], i)
		}
	}
	var queue []int
	for i, n := range indeg {
		if n == 0 {
			queue = append(queue, i)
		}
	}
	seen := 0
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		seen++
		for _, u := range users[i] {
			if indeg[u]--; indeg[u] == 0 {
				queue = append(queue, u)
			}
		}
	}
	if seen < len(steps) {
		for i, n := range indeg {
			if n > 0 {
				return fmt.Errorf("step %s is on a dependency cycle: %w", steps[i].ID, ErrInvalid)
			}
		}
	}
	return nil
}

// StepsFromRunbook turns runbook actions into steps: same IDs, actions,
// resources and dependencies; manual actions become manual steps; the
// action's failure policy carries over. Timeouts and retries are the
// operation's to set.
func StepsFromRunbook(actions []netplan.Action) []Step {
	steps := make([]Step, 0, len(actions))
	for _, a := range actions {
		steps = append(steps, Step{
			ID:        a.ID,
			Action:    a.Action,
			Resource:  a.Resource,
			Detail:    a.Detail,
			DependsOn: append([]string(nil), a.DependsOn...),
			Manual:    a.Action == netplan.ActManual,
			OnFailure: a.OnFailure,
		})
	}
	return steps
}

// API is the job as the wire shows it.
func (j Job) API() api.Job {
	out := api.Job{
		ID: j.ID, Operation: j.Operation, Plan: j.Plan, Status: j.Status, Created: j.Created,
		Started: timePtr(j.Started), Finished: timePtr(j.Finished),
		Params: j.Params, Report: j.Report, Error: j.Error,
	}
	for _, s := range j.Steps {
		out.Steps = append(out.Steps, s.API())
	}
	return out
}

// API is the step as the wire shows it.
func (s Step) API() api.Step {
	out := api.Step{
		ID: s.ID, Action: s.Action, Resource: s.Resource, Detail: s.Detail,
		DependsOn: append([]string{}, s.DependsOn...), Manual: s.Manual, OnFailure: policy(s),
		Retries: s.Retries, Status: s.Status, Attempts: s.Attempts,
		Started: timePtr(s.Started), Finished: timePtr(s.Finished), Error: s.Error, Output: s.Output,
	}
	if s.Timeout > 0 {
		out.Timeout = s.Timeout.String()
	}
	return out
}

func policy(s Step) string {
	if s.OnFailure == "" {
		return api.PolicyStop
	}
	return s.OnFailure
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
