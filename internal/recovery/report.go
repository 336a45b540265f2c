package recovery

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/netplan"
)

// Report is what a run of an operation measured.
type Report struct {
	Job       string     `json:"job"`
	Operation string     `json:"operation"`
	Plan      string     `json:"plan"`
	Status    api.Status `json:"status"`
	// RTO runs from the job's start until every machine answered its health
	// check and every check passed.
	RTO time.Duration `json:"rtoNanos"`
	// RTOText is RTO for people.
	RTOText  string        `json:"rto"`
	Machines []MachineLoss `json:"machines,omitempty"`
	Steps    []StepTime    `json:"steps"`
	Checks   []CheckResult `json:"checks,omitempty"`
}

// MachineLoss is the data a recovered machine lost: the age of its point
// when the operation started (zero for a planned failover's final point).
type MachineLoss struct {
	VM         string    `json:"vm"`
	Site       string    `json:"site"`
	Point      uint64    `json:"point"`
	PointTime  time.Time `json:"pointTime"`
	DataLoss   string    `json:"dataLoss"`
	DataLossNs int64     `json:"dataLossNanos"`
	// Records is the loss in the workload's own records (a ledger's count),
	// where it keeps any.
	Records *RecordLoss `json:"records,omitempty"`
}

// StepTime is one step's outcome and duration.
type StepTime struct {
	ID       string     `json:"id"`
	Action   string     `json:"action"`
	Status   api.Status `json:"status"`
	Duration string     `json:"duration"`
	Error    string     `json:"error,omitempty"`
}

// CheckResult is one check's outcome.
type CheckResult struct {
	ID     string     `json:"id"`
	Detail string     `json:"detail"`
	Status api.Status `json:"status"`
	Error  string     `json:"error,omitempty"`
}

// BuildReport measures a finished (or running) job. It fits the driver's
// Options.Report.
func BuildReport(j Job) Report {
	r := Report{Job: j.ID, Operation: j.Operation, Plan: j.Plan, Status: j.Status}
	var end time.Time
	planned := false
	var params struct {
		Planned bool `json:"planned"`
	}
	if json.Unmarshal(j.Params, &params) == nil {
		planned = params.Planned
	}
	for _, s := range j.Steps {
		st := StepTime{ID: s.ID, Action: s.Action, Status: s.Status, Error: s.Error}
		if !s.Started.IsZero() && !s.Finished.IsZero() {
			st.Duration = s.Finished.Sub(s.Started).Round(time.Millisecond).String()
		}
		r.Steps = append(r.Steps, st)
		switch s.Action {
		case ActBootMachine, netplan.ActRunCheck:
			if s.Status == api.StatusSucceeded && s.Finished.After(end) {
				end = s.Finished
			}
		}
		if s.Action == netplan.ActRunCheck {
			r.Checks = append(r.Checks, CheckResult{ID: s.ID, Detail: s.Detail, Status: s.Status, Error: s.Error})
		}
		if s.Action == ActBootMachine && s.Status == api.StatusSucceeded {
			var out BootOutput
			if json.Unmarshal(s.Output, &out) == nil {
				for _, m := range out.Machines {
					ml := MachineLoss{VM: m.VM, Site: m.Site, Point: m.Point.Seq, PointTime: m.Point.Time, Records: m.Records}
					if !planned && !j.Started.IsZero() && j.Started.After(m.Point.Time) {
						ml.DataLossNs = int64(j.Started.Sub(m.Point.Time))
					}
					ml.DataLoss = time.Duration(ml.DataLossNs).Round(time.Millisecond).String()
					r.Machines = append(r.Machines, ml)
				}
			}
		}
	}
	sort.Slice(r.Machines, func(a, b int) bool { return r.Machines[a].VM < r.Machines[b].VM })
	if !j.Started.IsZero() && !end.IsZero() && j.Status == api.StatusSucceeded {
		r.RTO = end.Sub(j.Started)
		r.RTOText = r.RTO.Round(time.Millisecond).String()
	}
	return r
}

// ReportJSON is BuildReport encoded, for Options.Report.
func ReportJSON(j Job) json.RawMessage { return mustJSON(BuildReport(j)) }
