package recovery

import (
	"context"

	"github.com/standby-dr/standby/internal/api"
)

// Store keeps jobs durably. The driver calls it before acting on any
// transition, so its contract is strict:
//   - Create and Save are atomic and durable when they return nil: the
//     job, step and event they were given are all stored, or none is.
//   - Save stores only the state of what it is given: for a job its status,
//     times, report and error (not its steps); for a step its status,
//     attempts, times, error and output (not its definition).
//   - Every stored event gets the next sequence number, returned in the
//     event; sequence numbers grow across all jobs.
//   - Load and Jobs return what was last stored; a job that does not exist
//     returns an error wrapping ErrNotFound.
//
// The daemon implements it over internal/state.
type Store interface {
	Create(ctx context.Context, j Job, ev api.Event) (api.Event, error)
	Save(ctx context.Context, tr Transition) (api.Event, error)
	Load(ctx context.Context, id string) (Job, error)
	Jobs(ctx context.Context, f JobFilter) ([]Job, error) // newest first, without steps
	Events(ctx context.Context, job string, after int64) ([]api.Event, error)
}

// Transition is one change to store: the job's state, a step's state, or
// both, with the event that tells of it.
type Transition struct {
	JobID string
	Job   *Job  // when set, the job's state is stored
	Step  *Step // when set, this step's state is stored
	Event api.Event
}

// JobFilter selects jobs; zero values select all.
type JobFilter struct {
	Status    []api.Status
	Operation string
	Plan      string
	Limit     int
}
