package api

import (
	"encoding/json"
	"time"
)

// Status is the state of a job or a step.
type Status string

// Statuses. A step goes pending → running → succeeded or failed; a manual
// step, or a failed step whose policy is ask, goes to waiting until an
// operator acks it; a step that can no longer run is skipped. A job is
// pending, running, waiting (a step waits for an operator), succeeded or
// failed.
const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusSkipped   Status = "skipped"
	StatusWaiting   Status = "waiting"
)

// Finished reports whether s is final for a job: nothing will change it.
func (s Status) Finished() bool { return s == StatusSucceeded || s == StatusFailed }

// Done reports whether s is final for a step.
func (s Status) Done() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusSkipped
}

// Policies: what a failed step does to its job.
const (
	PolicyStop    = "stop"    // the job fails; nothing more starts
	PolicyAsk     = "ask"     // the step waits for an operator: ack proceeds, abort fails the job
	PolicyProceed = "proceed" // the failure is recorded and the job goes on
)

// Job is one run of an operation (drill, cleanup, failover, commit,
// reprotect, failback) on a plan.
type Job struct {
	ID        string          `json:"id"`
	Operation string          `json:"operation"`
	Plan      string          `json:"plan"`
	Status    Status          `json:"status"`
	Created   time.Time       `json:"created"`
	Started   *time.Time      `json:"started,omitempty"`
	Finished  *time.Time      `json:"finished,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Report    json.RawMessage `json:"report,omitempty"`
	Error     string          `json:"error,omitempty"` // why it failed
	Steps     []Step          `json:"steps,omitempty"`
}

// Step is one step of a job.
type Step struct {
	ID        string          `json:"id"`
	Action    string          `json:"action"`
	Resource  string          `json:"resource"`
	Detail    string          `json:"detail,omitempty"`
	DependsOn []string        `json:"dependsOn"`
	Manual    bool            `json:"manual,omitempty"`
	OnFailure string          `json:"onFailure"`
	Timeout   string          `json:"timeout,omitempty"` // Go duration, e.g. "5m0s"
	Retries   int             `json:"retries"`
	Status    Status          `json:"status"`
	Attempts  int             `json:"attempts"`
	Started   *time.Time      `json:"started,omitempty"`
	Finished  *time.Time      `json:"finished,omitempty"`
	Error     string          `json:"error,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
}

// JobList is the answer of GET /v1/jobs.
type JobList struct {
	Jobs []Job `json:"jobs"`
}

// Event kinds.
const (
	EventJob  = "job"  // a job changed status
	EventStep = "step" // a step changed status, or an attempt failed and will be retried
)

// Event is one transition of a job or a step. Seq grows across the whole
// daemon, so a client resumes a stream after the last Seq it saw.
type Event struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Job     string    `json:"job"`
	Step    string    `json:"step,omitempty"`
	Kind    string    `json:"kind"`
	Status  Status    `json:"status"`
	Message string    `json:"message,omitempty"`
}

// EventList is the answer of GET /v1/jobs/{id}/events as JSON.
type EventList struct {
	Events []Event `json:"events"`
}

// ResumeRequest is the body of POST /v1/jobs/{id}/resume. With neither
// field set, the job continues with whatever can run; steps that wait for an
// operator keep waiting.
type ResumeRequest struct {
	// Ack releases the waiting steps: a manual step counts as done, a failed
	// step under the ask policy is passed over and its dependants run.
	Ack bool `json:"ack,omitempty"`
	// Retry runs the waiting failed steps again, their attempts renewed.
	Retry bool `json:"retry,omitempty"`
	// Abort fails the job: steps not yet done are skipped.
	Abort bool `json:"abort,omitempty"`
}

// Point is a recovery point of a protected VM.
type Point struct {
	VM     string    `json:"vm"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // crash or app
	Pinned bool      `json:"pinned"`
	Bytes  int64     `json:"bytes,omitempty"`
}

// Error codes. Each maps to one HTTP status and one exit code of the
// command line.
const (
	CodeBadRequest   = "bad_request"  // 400, exit 2
	CodeUnauthorized = "unauthorized" // 401, exit 2
	CodeForbidden    = "forbidden"    // 403, exit 2
	CodeNotFound     = "not_found"    // 404, exit 2
	CodeConflict     = "conflict"     // 409, exit 2: e.g. a job already running
	CodeInternal     = "internal"     // 500, exit 3
	CodeUnavailable  = "unavailable"  // 503, exit 3
)

// Error is the body of every answer that is not a success.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"` // what to do about it
}

func (e *Error) Error() string {
	if e.Hint != "" {
		return e.Message + " (" + e.Hint + ")"
	}
	return e.Message
}

// ErrorBody wraps an Error on the wire: {"error": {...}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// PointList is a VM's recovery points, oldest first.
type PointList struct {
	Points []Point `json:"points"`
}

// OperationRequest starts an operation of a recovery plan:
// POST /v1/plans/{plan}/{operation}.
type OperationRequest struct {
	// Planned: a planned failover (stop the source, ship a final point).
	Planned bool `json:"planned,omitempty"`
	// Point: latest (default), latest-app, a sequence number or a time.
	Point string `json:"point,omitempty"`
	// Drill: the drill job a cleanup removes (default: the plan's newest).
	Drill string `json:"drill,omitempty"`
}

// Operations a plan takes.
const (
	OpDrill        = "drill"
	OpDrillCleanup = "drill-cleanup"
	OpFailover     = "failover"
	OpCommit       = "commit"
	OpReprotect    = "reprotect"
	OpFailback     = "failback"
)

// VMStatus is a protected VM's replication state.
type VMStatus struct {
	VM string `json:"vm"`
	// State is initial-sync, protected, resyncing, paused or error.
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	LastPoint uint64    `json:"lastPoint"`
	LastTime  time.Time `json:"lastPointTime"`
	// SyncedAt is when the replicas last equalled the disks: the last
	// point's time, or later when nothing was written since. The RPO runs
	// from it.
	SyncedAt time.Time `json:"syncedAt,omitzero"`
	RPO      string    `json:"rpo"`
	RPONanos int64     `json:"rpoNanos"`
	Alert    bool      `json:"alert"` // RPO above the policy's rpoThreshold
	// Threshold is the policy's rpoThreshold.
	Threshold      string `json:"rpoThreshold,omitempty"`
	ThresholdNanos int64  `json:"rpoThresholdNanos,omitempty"`
	Shipped        int64  `json:"bytesShipped"`
	// Capture is how changes are found: tracked or scan.
	Capture string `json:"capture,omitempty"`
	// Progress is the cut being shipped while initial-sync or resyncing.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is how far a long piece of work has come.
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// StatusReport is the daemon's status: GET /v1/status.
type StatusReport struct {
	Spec string     `json:"spec"`
	VMs  []VMStatus `json:"vms"`
	// Plans tells where each plan stands: protected, failed-over,
	// committed, reprotected.
	Plans map[string]string `json:"plans"`
}
