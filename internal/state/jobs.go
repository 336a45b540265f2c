package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Job is one run of an operation.
type Job struct {
	ID        string
	Operation string
	Plan      string
	Status    string
	Created   time.Time
	Started   time.Time // zero: not started
	Finished  time.Time // zero: not finished
	Params    []byte    // JSON
	Report    []byte    // JSON, nil until there is one
	Error     string    // why it failed
}

// Step is one step of a job: its definition (fixed when the job is created)
// and its state (changed by UpdateStep).
type Step struct {
	JobID     string
	ID        string
	Position  int // order in the job's list
	Action    string
	Resource  string
	Detail    string
	DependsOn []string
	Manual    bool
	Policy    string
	Timeout   time.Duration
	Retries   int
	Backoff   time.Duration
	Params    []byte // JSON

	Status   string
	Attempts int
	Started  time.Time
	Finished time.Time
	Error    string
	Output   []byte // JSON
}

// Event is one recorded transition. Seq is assigned by AppendEvent and
// grows by one with every event of the database.
type Event struct {
	Seq     int64
	Time    time.Time
	Job     string
	Step    string // empty for an event of the job itself
	Kind    string
	Status  string
	Message string
}

// InsertJob stores a new job with its steps. A job with the same ID is an
// error: a job is created once.
func (t *Tx) InsertJob(j Job, steps []Step) error {
	if j.Params == nil {
		j.Params = []byte("{}")
	}
	_, err := t.exec("insert job "+j.ID, `INSERT INTO jobs (id, operation, plan, status, created_at, started_at, finished_at, params, report, error)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.Operation, j.Plan, j.Status, encTime(j.Created), encTime(j.Started), encTime(j.Finished), string(j.Params), encJSON(j.Report), j.Error)
	if err != nil {
		return err
	}
	for i, s := range steps {
		deps, err := json.Marshal(nonNil(s.DependsOn))
		if err != nil {
			return fmt.Errorf("state: insert job %s: step %s: %w", j.ID, s.ID, err)
		}
		_, err = t.exec("insert job "+j.ID+" step "+s.ID, `INSERT INTO steps (job_id, step_id, position, action, resource, detail, depends_on, manual, policy,
			timeout_ms, retries, backoff_ms, params, status, attempts, started_at, finished_at, error, output)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			j.ID, s.ID, i, s.Action, s.Resource, s.Detail, string(deps), boolInt(s.Manual), s.Policy,
			s.Timeout.Milliseconds(), s.Retries, s.Backoff.Milliseconds(), encJSON(s.Params),
			s.Status, s.Attempts, encTime(s.Started), encTime(s.Finished), s.Error, encJSON(s.Output))
		if err != nil {
			return err
		}
	}
	return nil
}

// UpdateJob stores a job's status, times, report and error.
func (t *Tx) UpdateJob(j Job) error {
	res, err := t.exec("update job "+j.ID, `UPDATE jobs SET status = ?, started_at = ?, finished_at = ?, report = ?, error = ? WHERE id = ?`,
		j.Status, encTime(j.Started), encTime(j.Finished), encJSON(j.Report), j.Error, j.ID)
	if err != nil {
		return err
	}
	return mustAffect(res, "update job "+j.ID)
}

// UpdateStep stores a step's state: status, attempts, times, error, output.
// Its definition does not change.
func (t *Tx) UpdateStep(s Step) error {
	res, err := t.exec("update job "+s.JobID+" step "+s.ID, `UPDATE steps SET status = ?, attempts = ?, started_at = ?, finished_at = ?, error = ?, output = ?
		WHERE job_id = ? AND step_id = ?`,
		s.Status, s.Attempts, encTime(s.Started), encTime(s.Finished), s.Error, encJSON(s.Output), s.JobID, s.ID)
	if err != nil {
		return err
	}
	return mustAffect(res, "update job "+s.JobID+" step "+s.ID)
}

// AppendEvent records e with the next sequence number and returns it. The
// one writer makes MAX+1 safe without database-specific sequences.
func (t *Tx) AppendEvent(e Event) (Event, error) {
	var max sql.NullInt64
	if err := t.tx.QueryRowContext(t.ctx, `SELECT MAX(seq) FROM events`).Scan(&max); err != nil {
		return e, fmt.Errorf("state: append event of job %s: %w", e.Job, err)
	}
	e.Seq = max.Int64 + 1
	if e.Time.IsZero() {
		e.Time = t.db.clock.Now()
	}
	_, err := t.exec("append event of job "+e.Job, `INSERT INTO events (seq, at, job_id, step_id, kind, status, message) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		e.Seq, encTime(e.Time), e.Job, e.Step, e.Kind, e.Status, e.Message)
	return e, err
}

func mustAffect(res sql.Result, op string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("state: %s: %w", op, err)
	}
	if n == 0 {
		return fmt.Errorf("state: %s: %w", op, ErrNotFound)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const jobColumns = `id, operation, plan, status, created_at, started_at, finished_at, params, report, error`

func scanJob(row interface{ Scan(...any) error }) (Job, error) {
	var j Job
	var created, started, finished, params, report sql.NullString
	if err := row.Scan(&j.ID, &j.Operation, &j.Plan, &j.Status, &created, &started, &finished, &params, &report, &j.Error); err != nil {
		return j, err
	}
	var err error
	var errs []error
	j.Created, err = decTime(created)
	errs = append(errs, err)
	j.Started, err = decTime(started)
	errs = append(errs, err)
	j.Finished, err = decTime(finished)
	errs = append(errs, err)
	j.Params, j.Report = decJSON(params), decJSON(report)
	return j, errors.Join(errs...)
}

// Job reads a job and its steps in list order. A missing job returns an
// error wrapping ErrNotFound.
func (db *DB) Job(ctx context.Context, id string) (Job, []Step, error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Job{}, nil, fmt.Errorf("state: read job %s: %w", id, err)
	}
	defer tx.Rollback()
	j, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, nil, fmt.Errorf("state: job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Job{}, nil, fmt.Errorf("state: read job %s: %w", id, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT step_id, position, action, resource, detail, depends_on, manual, policy, timeout_ms, retries, backoff_ms,
		params, status, attempts, started_at, finished_at, error, output FROM steps WHERE job_id = ? ORDER BY position`, id)
	if err != nil {
		return Job{}, nil, fmt.Errorf("state: read steps of job %s: %w", id, err)
	}
	defer rows.Close()
	var steps []Step
	for rows.Next() {
		s := Step{JobID: id}
		var deps string
		var manual int
		var timeoutMS, backoffMS int64
		var params, started, finished, output sql.NullString
		if err := rows.Scan(&s.ID, &s.Position, &s.Action, &s.Resource, &s.Detail, &deps, &manual, &s.Policy, &timeoutMS, &s.Retries, &backoffMS,
			&params, &s.Status, &s.Attempts, &started, &finished, &s.Error, &output); err != nil {
			return Job{}, nil, fmt.Errorf("state: read steps of job %s: %w", id, err)
		}
		if err := json.Unmarshal([]byte(deps), &s.DependsOn); err != nil {
			return Job{}, nil, fmt.Errorf("state: read job %s step %s: depends_on: %w", id, s.ID, err)
		}
		s.Manual = manual != 0
		s.Timeout, s.Backoff = time.Duration(timeoutMS)*time.Millisecond, time.Duration(backoffMS)*time.Millisecond
		s.Params, s.Output = decJSON(params), decJSON(output)
		var e1, e2 error
		s.Started, e1 = decTime(started)
		s.Finished, e2 = decTime(finished)
		if err := errors.Join(e1, e2); err != nil {
			return Job{}, nil, fmt.Errorf("state: read job %s step %s: %w", id, s.ID, err)
		}
		steps = append(steps, s)
	}
	if err := rows.Err(); err != nil {
		return Job{}, nil, fmt.Errorf("state: read steps of job %s: %w", id, err)
	}
	return j, steps, nil
}

// JobFilter selects jobs. Zero values select everything.
type JobFilter struct {
	Status    []string // any of these
	Operation string
	Plan      string
	Limit     int // newest first; 0 means no limit
}

// Jobs lists jobs, newest first, without their steps.
func (db *DB) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	var where []string
	var args []any
	if len(f.Status) > 0 {
		where = append(where, "status IN (?"+strings.Repeat(", ?", len(f.Status)-1)+")")
		for _, s := range f.Status {
			args = append(args, s)
		}
	}
	if f.Operation != "" {
		where = append(where, "operation = ?")
		args = append(args, f.Operation)
	}
	if f.Plan != "" {
		where = append(where, "plan = ?")
		args = append(args, f.Plan)
	}
	q := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: list jobs: %w", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("state: list jobs: %w", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list jobs: %w", err)
	}
	return out, nil
}

// Events lists the events of a job (all jobs when job is empty) with a
// sequence number above after, oldest first, at most limit (0: all).
func (db *DB) Events(ctx context.Context, job string, after int64, limit int) ([]Event, error) {
	q := `SELECT seq, at, job_id, step_id, kind, status, message FROM events WHERE seq > ?`
	args := []any{after}
	if job != "" {
		q += ` AND job_id = ?`
		args = append(args, job)
	}
	q += ` ORDER BY seq`
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: list events of job %s: %w", job, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at sql.NullString
		if err := rows.Scan(&e.Seq, &at, &e.Job, &e.Step, &e.Kind, &e.Status, &e.Message); err != nil {
			return nil, fmt.Errorf("state: list events of job %s: %w", job, err)
		}
		if e.Time, err = decTime(at); err != nil {
			return nil, fmt.Errorf("state: event %d: %w", e.Seq, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list events of job %s: %w", job, err)
	}
	return out, nil
}
