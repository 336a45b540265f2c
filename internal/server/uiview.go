package server

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/recovery"
)

// The dashboard's pages are built in two steps: the functions here turn
// what the daemon reports into plain view values (strings, numbers and
// geometry, with the time "now" given), and the templates only lay them
// out. So the templates hold no logic worth testing on its own.

const (
	recentJobs = 15   // jobs on the overview
	maxMarks   = 2000 // points drawn on a timeline, the newest
	maxRows    = 200  // points listed in a VM's table, the newest
	maxEvents  = 40   // events listed on a job's page, the newest
)

// stamp is a moment as the dashboard shows it: in UTC, with its age.
type stamp struct {
	UTC string // 2006-01-02 15:04:05 UTC; empty for no time
	ISO string // RFC 3339, for <time datetime>
	Ago string // "4m 12s ago"
}

func newStamp(t, now time.Time) stamp {
	if t.IsZero() {
		return stamp{}
	}
	t = t.UTC()
	return stamp{UTC: t.Format("2006-01-02 15:04:05 UTC"), ISO: t.Format(time.RFC3339Nano), Ago: ago(now.Sub(t))}
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "in " + human(-d) // a clock ahead of the daemon's
	case d < time.Second:
		return "just now"
	}
	return human(d) + " ago"
}

// human writes a duration the way people say it, in two units at most.
func human(d time.Duration) string {
	if d < 0 {
		return "-" + human(-d)
	}
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return twoUnits(d.Round(time.Second), time.Minute, "m", time.Second, "s")
	case d < 24*time.Hour:
		return twoUnits(d.Round(time.Minute), time.Hour, "h", time.Minute, "m")
	}
	return twoUnits(d.Round(time.Hour), 24*time.Hour, "d", time.Hour, "h")
}

func twoUnits(d, big time.Duration, bigName string, small time.Duration, smallName string) string {
	b, s := d/big, (d%big)/small
	if s == 0 {
		return fmt.Sprintf("%d%s", b, bigName)
	}
	return fmt.Sprintf("%d%s %d%s", b, bigName, s, smallName)
}

// byteSize writes n in binary units.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// badge is a state shown as a coloured label, with what it means.
type badge struct {
	Name  string
	Class string // ok, busy, warn, bad or idle: the colour
	Help  string
}

var vmStates = map[string]badge{
	"initial-sync": {Class: "busy", Help: "the first full copy of the disks is on its way; there is no point to recover from until it ends"},
	"protected":    {Class: "ok", Help: "recovery points are taken on the policy's schedule"},
	"resyncing":    {Class: "busy", Help: "a gap in change tracking is being healed by comparing the disks"},
	"paused":       {Class: "warn", Help: "no points are taken, for example because the VM was fenced after a failover"},
	"error":        {Class: "bad", Help: "taking points fails; the reason says why, and the daemon retries"},
	"stopped":      {Class: "idle", Help: "replication of this VM has ended"},
}

var planStages = map[string]badge{
	"protected":   {Class: "ok", Help: "replicating to the recovery site; a drill or a failover may start"},
	"failed-over": {Class: "warn", Help: "running at the recovery site; commit the failover to keep it"},
	"committed":   {Class: "warn", Help: "the failover is final; reprotect to replicate back to the original site"},
	"reprotected": {Class: "busy", Help: "replicating back to the original site; fail back when ready"},
}

var jobStatuses = map[api.Status]badge{
	api.StatusPending:   {Class: "idle", Help: "not started yet"},
	api.StatusRunning:   {Class: "busy", Help: "steps are running"},
	api.StatusWaiting:   {Class: "warn", Help: "a step waits for an operator: standby jobs resume ID with --ack, --retry or --abort"},
	api.StatusSucceeded: {Class: "ok", Help: "every step is done"},
	api.StatusFailed:    {Class: "bad", Help: "a step failed under the stop policy, or the job was aborted"},
	api.StatusSkipped:   {Class: "idle", Help: "not run: the job ended before it, or a step it depends on failed"},
}

// stepStatuses say what a status means for one step.
var stepStatuses = map[api.Status]badge{
	api.StatusPending:   {Class: "idle", Help: "waits for the steps it depends on"},
	api.StatusRunning:   {Class: "busy", Help: "running now"},
	api.StatusWaiting:   {Class: "warn", Help: "waits for an operator: a manual step, or a failure under the ask policy"},
	api.StatusSucceeded: {Class: "ok", Help: "done"},
	api.StatusFailed:    {Class: "bad", Help: "failed; its failure policy decided what the job did next"},
	api.StatusSkipped:   {Class: "idle", Help: "not run: the job ended first, or a step it depends on failed"},
}

// onFailure tells what a failed step's policy did to its job.
var onFailure = map[string]string{
	api.PolicyStop:    "the job stopped",
	api.PolicyAsk:     "an operator decides",
	api.PolicyProceed: "the job went on",
}

// operationHelp completes "A drill …" for each operation.
var operationHelp = map[string]string{
	recovery.OpDrill:        "tests a failover into an isolated network while production keeps running",
	recovery.OpDrillCleanup: "removes everything a drill made",
	recovery.OpFailover:     "recovers the plan's machines at the recovery site",
	recovery.OpCommit:       "makes a failover final and releases the points it held",
	recovery.OpReprotect:    "replicates the recovered machines back to the original site",
	recovery.OpFailback:     "returns the machines to the original site",
	recovery.OpProvision:    "builds the recovery site's network ahead of any failover",
}

func lookupBadge(m map[string]badge, name string) badge {
	b, ok := m[name]
	if !ok {
		b = badge{Class: "idle"}
	}
	b.Name = name
	return b
}

func statusBadge(s api.Status) badge { return lookupStatus(jobStatuses, s) }

func stepBadge(s api.Status) badge { return lookupStatus(stepStatuses, s) }

func lookupStatus(m map[api.Status]badge, s api.Status) badge {
	b, ok := m[s]
	if !ok {
		b = badge{Class: "idle"}
	}
	b.Name = string(s)
	return b
}

func kindClass(kind string) string {
	if kind == "app" || kind == "crash" {
		return kind
	}
	return "other"
}

func vmLink(vm string) string  { return "/ui/vms/" + url.PathEscape(vm) }
func jobLink(id string) string { return "/ui/jobs/" + url.PathEscape(id) }

// overviewView is the data of /ui/.
type overviewView struct {
	Spec string
	// Replication is false when the server has no view of replication
	// (only jobs); StatusErr says why the status is missing.
	Replication bool
	StatusErr   string
	JobsErr     string
	Alerts      []vmRow // RPO above threshold
	Failing     []vmRow // in error
	VMs         []vmRow
	Plans       []planRow
	Jobs        []jobRow
	States      []badge // the legend
}

type vmRow struct {
	Name, Link string
	State      badge
	Reason     string
	RPO        string
	Alert      bool
	HasPoint   bool
	LastSeq    uint64
	LastKind   string // crash, app, or empty when unknown
	LastClass  string // the kind's colour
	LastTime   stamp
	Shipped    string
	Threshold  string // the policy's rpoThreshold
	Capture    string // tracked or scan
	Progress   string // of an initial sync or resync
}

type planRow struct {
	Name    string
	Stage   badge
	LastJob *jobRow
}

type jobRow struct {
	ID, Link, Operation, Plan string
	Status                    badge
	Started                   stamp
	Duration                  string
}

func newVMRow(v api.VMStatus, last *api.Point, now time.Time) vmRow {
	row := vmRow{
		Name: v.VM, Link: vmLink(v.VM), State: lookupBadge(vmStates, v.State), Reason: v.Reason,
		Alert: v.Alert, HasPoint: v.LastPoint > 0 || !v.LastTime.IsZero(), LastSeq: v.LastPoint,
		LastTime: newStamp(v.LastTime, now), Shipped: byteSize(v.Shipped),
	}
	if v.RPONanos > 0 || v.RPO != "" {
		row.RPO = human(time.Duration(v.RPONanos))
	}
	if v.ThresholdNanos > 0 {
		row.Threshold = human(time.Duration(v.ThresholdNanos))
	}
	row.Capture = v.Capture
	if p := v.Progress; p != nil && p.Total > 0 {
		row.Progress = fmt.Sprintf("%d%% of %s", p.Done*100/p.Total, byteSize(p.Total))
	}
	if last != nil {
		row.LastKind, row.LastClass = last.Kind, kindClass(last.Kind)
	}
	return row
}

func newJobRow(j recovery.Job, now time.Time) jobRow {
	row := jobRow{ID: j.ID, Link: jobLink(j.ID), Operation: j.Operation, Plan: j.Plan,
		Status: statusBadge(j.Status), Started: newStamp(j.Started, now)}
	switch {
	case j.Started.IsZero():
	case !j.Finished.IsZero():
		row.Duration = human(j.Finished.Sub(j.Started))
	default:
		row.Duration = human(now.Sub(j.Started)) + " so far"
	}
	if j.Started.IsZero() {
		row.Started = newStamp(j.Created, now)
	}
	return row
}

// buildOverview lays out the status (nil when missing), each VM's last
// point (for its kind), each plan's newest job and the recent jobs.
func buildOverview(st *api.StatusReport, last map[string]api.Point, planJobs map[string]recovery.Job, jobs []recovery.Job, now time.Time) overviewView {
	var v overviewView
	if st != nil {
		v.Spec = st.Spec
		vms := slices.Clone(st.VMs)
		sort.Slice(vms, func(a, b int) bool { return vms[a].VM < vms[b].VM })
		for _, vm := range vms {
			var lp *api.Point
			if p, ok := last[vm.VM]; ok {
				lp = &p
			}
			row := newVMRow(vm, lp, now)
			v.VMs = append(v.VMs, row)
			if row.Alert {
				v.Alerts = append(v.Alerts, row)
			}
			if vm.State == "error" {
				v.Failing = append(v.Failing, row)
			}
		}
		names := make([]string, 0, len(st.Plans))
		for name := range st.Plans {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			row := planRow{Name: name, Stage: lookupBadge(planStages, st.Plans[name])}
			if j, ok := planJobs[name]; ok {
				jr := newJobRow(j, now)
				row.LastJob = &jr
			}
			v.Plans = append(v.Plans, row)
		}
	}
	for i, j := range jobs {
		if i == recentJobs {
			break
		}
		v.Jobs = append(v.Jobs, newJobRow(j, now))
	}
	for _, name := range []string{"initial-sync", "protected", "resyncing", "paused", "error"} {
		v.States = append(v.States, lookupBadge(vmStates, name))
	}
	return v
}

// vmView is the data of /ui/vms/{vm}.
type vmView struct {
	Name     string
	Status   *vmRow // nil when the status does not list the VM
	Timeline timeline
	Points   []pointRow // newest first
	Total    int
	Crash    int
	App      int
	Pinned   int
	Omitted  int // points left out of the table
}

type pointRow struct {
	Seq    uint64
	Kind   string
	Class  string
	Pinned bool
	Time   stamp
	Bytes  string
}

// timeline is the geometry of a VM's points drawn in SVG: x is time, the
// app and crash points on lanes of their own.
type timeline struct {
	Width, Height       int
	Left, Right         float64 // the drawn span
	AppY, CrashY, AxisY float64
	TickY, LabelY       float64 // a tick's foot, its label's baseline
	Marks               []mark
	Ticks               []tick
	NowX                float64
	Omitted             int // the oldest points, not drawn
	From, To            string
}

type mark struct {
	X, Y   float64
	Class  string // the kind: app, crash or other
	Pinned bool
	Title  string
}

type tick struct {
	X     float64
	Label string
}

const (
	tlWidth  = 1000
	tlLeft   = 60.0
	tlRight  = 980.0
	tlAppY   = 28.0
	tlCrashY = 58.0
	tlAxisY  = 80.0
	tlHeight = 104
)

// buildVM lays out a VM's points (oldest first, as the daemon gives them).
func buildVM(name string, st *api.VMStatus, points []api.Point, now time.Time) vmView {
	v := vmView{Name: name, Total: len(points)}
	if st != nil {
		var last *api.Point
		for i := range points {
			if points[i].Seq == st.LastPoint {
				last = &points[i]
			}
		}
		row := newVMRow(*st, last, now)
		v.Status = &row
	}
	for _, p := range points {
		switch p.Kind {
		case "app":
			v.App++
		case "crash":
			v.Crash++
		}
		if p.Pinned {
			v.Pinned++
		}
	}
	v.Timeline = drawTimeline(points, now)
	for i := len(points) - 1; i >= 0; i-- {
		if len(v.Points) == maxRows {
			v.Omitted = i + 1
			break
		}
		p := points[i]
		row := pointRow{Seq: p.Seq, Kind: p.Kind, Class: kindClass(p.Kind), Pinned: p.Pinned, Time: newStamp(p.Time, now)}
		if p.Bytes > 0 {
			row.Bytes = byteSize(p.Bytes)
		}
		v.Points = append(v.Points, row)
	}
	return v
}

func drawTimeline(points []api.Point, now time.Time) timeline {
	t := timeline{Width: tlWidth, Height: tlHeight, Left: tlLeft, Right: tlRight, AppY: tlAppY, CrashY: tlCrashY, AxisY: tlAxisY,
		TickY: tlAxisY + 5, LabelY: tlAxisY + 18}
	if len(points) > maxMarks {
		t.Omitted = len(points) - maxMarks
		points = points[t.Omitted:]
	}
	if len(points) == 0 {
		return t
	}
	t0, t1 := points[0].Time, points[0].Time
	for _, p := range points {
		if p.Time.Before(t0) {
			t0 = p.Time
		}
		if p.Time.After(t1) {
			t1 = p.Time
		}
	}
	if now.After(t1) {
		t1 = now // the gap from the last point to now is the RPO, seen
	}
	if !t1.After(t0) {
		t0, t1 = t0.Add(-30*time.Second), t1.Add(30*time.Second)
	}
	span := float64(t1.Sub(t0))
	x := func(at time.Time) float64 {
		return round1(tlLeft + float64(at.Sub(t0))/span*(tlRight-tlLeft))
	}
	for _, p := range points {
		m := mark{X: x(p.Time), Y: tlCrashY, Class: kindClass(p.Kind), Pinned: p.Pinned,
			Title: fmt.Sprintf("point %d, %s, %s", p.Seq, p.Kind, p.Time.UTC().Format("2006-01-02 15:04:05 UTC"))}
		if p.Kind == "app" {
			m.Y = tlAppY
		}
		if p.Pinned {
			m.Title += ", pinned"
		}
		t.Marks = append(t.Marks, m)
	}
	layout := "15:04:05"
	if t1.Sub(t0) > 24*time.Hour {
		layout = "Jan 2 15:04"
	}
	const n = 4
	for i := 0; i <= n; i++ {
		at := t0.Add(time.Duration(float64(t1.Sub(t0)) * float64(i) / n))
		t.Ticks = append(t.Ticks, tick{X: x(at), Label: at.UTC().Format(layout)})
	}
	t.NowX = x(now)
	if now.Before(t0) || now.After(t1) {
		t.NowX = 0
	}
	t.From, t.To = t0.UTC().Format("2006-01-02 15:04:05 UTC"), t1.UTC().Format("2006-01-02 15:04:05 UTC")
	return t
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// jobView is the data of /ui/jobs/{id}: the job's report, as recovery
// measured it, with the steps laid out in time.
type jobView struct {
	ID, Operation, Plan string
	OpHelp              string
	Status              badge
	Live                bool
	Created             stamp
	Started             stamp
	Finished            stamp
	Elapsed             string
	Error               string
	RTO                 string
	RTOExact            string
	Planned             bool
	Machines            []machineRow
	HasRecords          bool // some machine has a record count
	Steps               []stepRow
	Checks              []checkRow
	Waiting             []string // steps that wait for an operator
	Failed              int      // steps that failed
	Events              []eventRow
	MoreEvents          int
	LastSeq             int64
}

type machineRow struct {
	VM, Site  string
	Point     uint64
	PointTime stamp
	DataLoss  string
	// Records is the workload's own count, when it keeps one: "12 of 321
	// lost".
	Records string
}

type stepRow struct {
	N                    int
	ID, Action, Resource string
	Detail               string
	Manual               bool
	Status               badge
	Policy               string // what its failure did to the job
	Attempts             int
	Duration             string
	Error                string
	Bar                  *bar
}

// bar is a step's span on the job's time axis, in a 0–1000 viewBox.
type bar struct {
	X, W  float64
	Class string
}

type checkRow struct {
	ID, Detail string
	Status     badge
	Error      string
}

type eventRow struct {
	Seq     int64
	Time    stamp
	Step    string
	Status  badge
	Message string
}

// jobReport is the job's stored report, or, while the job runs (or when
// none was stored), the report recovery builds of it as it stands.
func jobReport(j recovery.Job) recovery.Report {
	if j.Status.Finished() && len(j.Report) > 0 {
		var r recovery.Report
		if json.Unmarshal(j.Report, &r) == nil {
			return r
		}
	}
	return recovery.BuildReport(j)
}

func buildJob(j recovery.Job, events []api.Event, now time.Time) jobView {
	rep := jobReport(j)
	v := jobView{
		ID: j.ID, Operation: j.Operation, Plan: j.Plan, OpHelp: operationHelp[j.Operation],
		Status: statusBadge(j.Status), Live: !j.Status.Finished(), Error: j.Error,
		Created: newStamp(j.Created, now), Started: newStamp(j.Started, now), Finished: newStamp(j.Finished, now),
	}
	var params struct {
		Planned bool `json:"planned"`
	}
	if json.Unmarshal(j.Params, &params) == nil {
		v.Planned = params.Planned
	}
	switch {
	case j.Started.IsZero():
	case !j.Finished.IsZero():
		v.Elapsed = human(j.Finished.Sub(j.Started))
	default:
		v.Elapsed = human(now.Sub(j.Started)) + " so far"
	}
	if rep.RTO > 0 {
		v.RTO, v.RTOExact = human(rep.RTO), rep.RTOText
	}
	for _, m := range rep.Machines {
		row := machineRow{VM: m.VM, Site: m.Site, Point: m.Point,
			PointTime: newStamp(m.PointTime, now), DataLoss: human(time.Duration(m.DataLossNs))}
		if m.Records != nil {
			row.Records = fmt.Sprintf("%d of %d lost", m.Records.Lost, m.Records.AtSource)
			v.HasRecords = true
		}
		v.Machines = append(v.Machines, row)
	}
	for _, c := range rep.Checks {
		v.Checks = append(v.Checks, checkRow{ID: c.ID, Detail: c.Detail, Status: stepBadge(c.Status), Error: c.Error})
	}
	v.Steps = stepRows(j, rep, now)
	for _, s := range j.Steps {
		switch s.Status {
		case api.StatusWaiting:
			v.Waiting = append(v.Waiting, s.ID)
		case api.StatusFailed:
			v.Failed++
		}
	}
	for _, ev := range events {
		v.LastSeq = max(v.LastSeq, ev.Seq)
	}
	if len(events) > maxEvents {
		v.MoreEvents = len(events) - maxEvents
		events = events[v.MoreEvents:]
	}
	for i := len(events) - 1; i >= 0; i-- {
		ev := events[i]
		v.Events = append(v.Events, eventRow{Seq: ev.Seq, Time: newStamp(ev.Time, now), Step: ev.Step,
			Status: stepBadge(ev.Status), Message: ev.Message})
		if ev.Kind == api.EventJob {
			v.Events[len(v.Events)-1].Status = statusBadge(ev.Status)
		}
	}
	return v
}

// stepRows joins each step's definition to its line of the report and
// places it on the job's time axis: from the job's start to its end, or to
// now while it runs.
func stepRows(j recovery.Job, rep recovery.Report, now time.Time) []stepRow {
	byID := make(map[string]recovery.StepTime, len(rep.Steps))
	for _, st := range rep.Steps {
		byID[st.ID] = st
	}
	t0 := j.Started
	t1 := j.Finished
	if t1.IsZero() {
		t1 = now
	}
	for _, s := range j.Steps {
		if !s.Started.IsZero() && (t0.IsZero() || s.Started.Before(t0)) {
			t0 = s.Started
		}
		if s.Finished.After(t1) {
			t1 = s.Finished
		}
	}
	span := float64(t1.Sub(t0))
	rows := make([]stepRow, 0, len(j.Steps))
	for i, s := range j.Steps {
		st, ok := byID[s.ID]
		if !ok {
			st = recovery.StepTime{ID: s.ID, Action: s.Action, Status: s.Status, Error: s.Error}
		}
		row := stepRow{N: i + 1, ID: s.ID, Action: s.Action, Resource: s.Resource, Detail: s.Detail, Manual: s.Manual,
			Status: stepBadge(st.Status), Attempts: s.Attempts, Error: st.Error}
		if st.Status == api.StatusFailed {
			p := s.OnFailure
			if p == "" {
				p = api.PolicyStop
			}
			row.Policy = onFailure[p]
		}
		if d, err := time.ParseDuration(st.Duration); err == nil {
			row.Duration = human(d)
		} else {
			row.Duration = st.Duration
		}
		end := s.Finished
		if end.IsZero() && !s.Started.IsZero() && !s.Status.Done() {
			end = now
			row.Duration = human(now.Sub(s.Started)) + " so far"
		}
		if !s.Started.IsZero() && !t0.IsZero() && span > 0 && !end.Before(s.Started) {
			x := float64(s.Started.Sub(t0)) / span * 1000
			w := float64(end.Sub(s.Started)) / span * 1000
			x = min(max(x, 0), 996)
			w = min(max(w, 4), 1000-x)
			row.Bar = &bar{X: round1(x), W: round1(w), Class: row.Status.Class}
		}
		rows = append(rows, row)
	}
	return rows
}

// pointBySeq finds a VM's point by its sequence number.
func pointBySeq(ps []api.Point, seq uint64) (api.Point, bool) {
	i := slices.IndexFunc(ps, func(p api.Point) bool { return p.Seq == seq })
	if i < 0 {
		return api.Point{}, false
	}
	return ps[i], true
}
