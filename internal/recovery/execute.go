package recovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
)

// Point is a recovery point of a VM, consistent across its disks.
type Point struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind"` // crash or app
}

// Protection is what recovery needs of replication. Every method is
// idempotent: a step that runs twice after a crash has its effect once.
type Protection interface {
	// Points returns a VM's committed points, oldest first.
	Points(ctx context.Context, vm string) ([]Point, error)
	// Pin keeps a point from retention for a job; Unpin releases every
	// point the job pinned of the VM.
	Pin(ctx context.Context, vm string, seq uint64, job string) error
	Unpin(ctx context.Context, vm, job string) error
	// Fence stops replicating the VM and keeps it stopped until reprotect:
	// after an unplanned failover the old source must not come back by
	// itself.
	Fence(ctx context.Context, vm string) error
	// Final cuts, ships and commits a last point of a VM whose machine is
	// stopped, then fences it.
	Final(ctx context.Context, vm string) (Point, error)
	// Disks makes the VM's disks at point seq writable files under dir for
	// a machine to boot from, at once (overlays on the point, where the
	// provider can serve them); called again with the same dir it returns
	// the same files.
	Disks(ctx context.Context, vm string, seq uint64, dir string) ([]provider.Disk, error)
	// Commit makes the recovered disks the VM's own and releases the job's
	// pins.
	Commit(ctx context.Context, vm, job string) error
	// Recovered records the disks a VM runs from after a failover;
	// RecoveredDisks returns them (none when it has not failed over).
	Recovered(ctx context.Context, vm string, disks []provider.Disk) error
	RecoveredDisks(ctx context.Context, vm string) ([]provider.Disk, error)
	// Reverse brings the surviving source disks level with the recovered
	// ones, sending only blocks whose hashes differ (reprotect); run with
	// the VM stopped, it is the final copy of a failback.
	Reverse(ctx context.Context, vm string) (ReverseStats, error)
	// SourceDisks are the VM's own disks at its source site.
	SourceDisks(ctx context.Context, vm string) ([]provider.Disk, error)
	// Resume lets a fenced VM replicate from its source again.
	Resume(ctx context.Context, vm string) error
	// Release discards the disks Disks gave under dir (their machines are
	// gone) and the points they held.
	Release(ctx context.Context, dir string) error
}

// ReverseStats is what a reverse copy compared and sent.
type ReverseStats struct {
	BytesRead int64 `json:"bytesRead"`
	BytesSent int64 `json:"bytesSent"`
	// Blocks were compared, of InAll blocks of the disks: where tracking
	// says neither side changed since the point, nothing is read.
	Blocks  int64   `json:"blocks"`
	InAll   int64   `json:"blocksInAll"`
	Differ  int64   `json:"differ"`
	Seconds float64 `json:"seconds"`
}

// Source is what a planned failover needs of the source site: stopping
// its machines (a provider's StopVM does).
type Source interface {
	StopVM(ctx context.Context, site, name string) error
}

// Runner executes the steps of recovery jobs against a provider and the
// protection; it is the Executor the daemon gives the driver.
type Runner struct {
	Sites      provider.Provider
	Protection Protection
	// Dir holds recovered disks: Dir/<job>/<vm>/.
	Dir   string
	Clock clock.Clock
	// Executable replaces the word standby at the start of a boot command.
	Executable string
	// Records, when set, counts the workload's own records, so that a
	// failover's report says how many records it lost.
	Records RecordCounter
}

// RecordCounter counts the records a VM's workload keeps on its disks (a
// ledger's own count); ok is false when it keeps none that can be counted.
type RecordCounter interface {
	Records(ctx context.Context, vm string, disks []provider.Disk) (n uint64, ok bool)
}

// RecordLoss is a move's loss in the workload's own records: what the
// disks it left held (the source's in a failover, the target's in a
// failback) when the machine booted, and what the disks it booted from
// held.
type RecordLoss struct {
	AtSource  uint64 `json:"atSource"`
	Recovered uint64 `json:"recovered"`
	Lost      uint64 `json:"lost"`
}

// tagged is what every step's params carry besides their own fields.
type tagged struct {
	Job string `json:"jobTag"`
}

// NewJobID names a job: the time and a few random bytes, so names sort by
// creation.
func NewJobID(c clock.Clock, op string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", op, c.Now().UTC().Format("20060102t150405"), hex.EncodeToString(b[:]))
}

// Tag gives a job its ID and stamps it into every step's params, so that
// the runner tags what it makes with the job.
func Tag(j Job, id string) Job {
	j.ID = id
	for i := range j.Steps {
		m := map[string]any{}
		if len(j.Steps[i].Params) > 0 {
			_ = json.Unmarshal(j.Steps[i].Params, &m)
		}
		m["jobTag"] = id
		j.Steps[i].Params = mustJSON(m)
	}
	return j
}

// Execute runs one step. It is idempotent: every create is by name, every
// delete tolerates absence, disks are reused.
func (r *Runner) Execute(ctx context.Context, s Step) (json.RawMessage, error) {
	var tag tagged
	if err := json.Unmarshal(s.Params, &tag); err != nil {
		return nil, Permanent(fmt.Errorf("step %s: params: %w", s.ID, err))
	}
	switch s.Action {
	case ActPinPoint:
		return r.pin(ctx, s, tag.Job)
	case ActUnpinPoint:
		var p PinParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		return nil, r.Protection.Unpin(ctx, p.VM, p.Job)
	case ActCommitPoint:
		var p PinParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		return nil, r.Protection.Commit(ctx, p.VM, p.Job)
	case ActFence:
		var p VMParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		return nil, r.Protection.Fence(ctx, p.VM)
	case ActStopSource, ActStopMachine:
		var p VMParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		return nil, r.Sites.StopVM(ctx, p.Site, p.Name)
	case ActFinalPoint:
		var p VMParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		pt, err := r.Protection.Final(ctx, p.VM)
		if err != nil {
			return nil, err
		}
		return mustJSON(pt), nil
	case ActBootMachine:
		return r.boot(ctx, s, tag.Job)
	case ActReverse:
		var p VMParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		st, err := r.Protection.Reverse(ctx, p.VM)
		if err != nil {
			return nil, err
		}
		return mustJSON(st), nil
	case ActResume:
		var p VMParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		return nil, r.Protection.Resume(ctx, p.VM)
	case netplan.ActRunCheck:
		return r.check(ctx, s)
	case netplan.ActRunScript:
		return r.script(ctx, s)
	case ActDeleteNet:
		return nil, r.cleanup(ctx, tag.Job, s)
	case ActCreateNet, netplan.ActCreateVNet, netplan.ActCreateSubnet, netplan.ActCreateRT, netplan.ActAssociateRT,
		netplan.ActCreateAppliance, netplan.ActCreateGateway, netplan.ActCreatePeering, netplan.ActCreateConn, netplan.ActDeleteConn:
		var p NetParams
		if err := json.Unmarshal(s.Params, &p); err != nil {
			return nil, Permanent(err)
		}
		if p.Ref != nil {
			return nil, r.Sites.DeleteNetwork(ctx, *p.Ref)
		}
		if p.Resource == nil {
			return nil, Permanent(fmt.Errorf("step %s: no resource", s.ID))
		}
		err := r.Sites.CreateNetwork(ctx, tag.Job, *p.Resource)
		if errors.Is(err, provider.ErrInvalid) || errors.Is(err, provider.ErrConflict) {
			err = Permanent(err)
		}
		return nil, err
	}
	return nil, Permanent(fmt.Errorf("step %s: no executor for action %q", s.ID, s.Action))
}

// pin chooses the point a step's params select and pins it for the job.
func (r *Runner) pin(ctx context.Context, s Step, job string) (json.RawMessage, error) {
	var p PinParams
	if err := json.Unmarshal(s.Params, &p); err != nil {
		return nil, Permanent(err)
	}
	// A planned failover pins the final point its dependency shipped.
	for _, in := range s.Inputs {
		var pt Point
		if json.Unmarshal(in, &pt) == nil && pt.Seq > 0 {
			if err := r.Protection.Pin(ctx, p.VM, pt.Seq, job); err != nil {
				return nil, err
			}
			return mustJSON(pt), nil
		}
	}
	pts, err := r.Protection.Points(ctx, p.VM)
	if err != nil {
		return nil, err
	}
	pt, err := choosePoint(pts, p.Point)
	if err != nil {
		return nil, Permanent(fmt.Errorf("virtual machine %s: %w", p.VM, err))
	}
	if err := r.Protection.Pin(ctx, p.VM, pt.Seq, job); err != nil {
		return nil, err
	}
	return mustJSON(pt), nil
}

// choosePoint picks latest, latest-app, a sequence number or the newest
// point at or before an RFC 3339 time.
func choosePoint(pts []Point, sel string) (Point, error) {
	if len(pts) == 0 {
		return Point{}, errors.New("no recovery point yet: wait for the initial replication to finish")
	}
	switch sel {
	case "", "latest":
		return pts[len(pts)-1], nil
	case "latest-app":
		for i := len(pts) - 1; i >= 0; i-- {
			if pts[i].Kind == "app" {
				return pts[i], nil
			}
		}
		return Point{}, errors.New("no app-consistent point: set appConsistentFrequency in the policy, or use --point latest")
	}
	if n, err := strconv.ParseUint(sel, 10, 64); err == nil {
		for _, p := range pts {
			if p.Seq == n {
				return p, nil
			}
		}
		return Point{}, fmt.Errorf("no point %d (points %d to %d are retained)", n, pts[0].Seq, pts[len(pts)-1].Seq)
	}
	t, err := time.Parse(time.RFC3339, sel)
	if err != nil {
		return Point{}, fmt.Errorf("--point %q: want latest, latest-app, a sequence number or an RFC 3339 time", sel)
	}
	for i := len(pts) - 1; i >= 0; i-- {
		if !pts[i].Time.After(t) {
			return pts[i], nil
		}
	}
	return Point{}, fmt.Errorf("no point at or before %s (the oldest is from %s)", t.Format(time.RFC3339), pts[0].Time.Format(time.RFC3339))
}

// BootOutput tells what a boot step started.
type BootOutput struct {
	Machines []BootedMachine `json:"machines"`
}

// BootedMachine is one machine a boot step started, with its point.
type BootedMachine struct {
	VM    string `json:"vm"`
	Site  string `json:"site"`
	Name  string `json:"name"`
	Point Point  `json:"point"`
	// Healthy is when its health check first passed.
	Healthy time.Time `json:"healthy"`
	// Records is what a failover lost of the workload's own records.
	Records *RecordLoss `json:"records,omitempty"`
}

func (r *Runner) boot(ctx context.Context, s Step, job string) (json.RawMessage, error) {
	var bp BootParams
	if err := json.Unmarshal(s.Params, &bp); err != nil {
		return nil, Permanent(err)
	}
	var out BootOutput
	for _, m := range bp.Machines {
		var pt Point
		var disks []provider.Disk
		var err error
		if m.Source {
			// A failback boots the machine from its own, reversed disks.
			if disks, err = r.Protection.SourceDisks(ctx, m.VM); err != nil {
				return nil, fmt.Errorf("boot %s: %w", m.VM, err)
			}
		} else {
			if err := json.Unmarshal(s.Inputs[m.Pin], &pt); err != nil || pt.Seq == 0 {
				return nil, Permanent(fmt.Errorf("boot %s: the pin step %s gave no point", m.VM, m.Pin))
			}
			dir := filepath.Join(r.Dir, job, m.Name)
			if disks, err = r.Protection.Disks(ctx, m.VM, pt.Seq, dir); err != nil {
				return nil, fmt.Errorf("boot %s: disks at point %d: %w", m.VM, pt.Seq, err)
			}
			if !m.Test {
				if err := r.Protection.Recovered(ctx, m.VM, disks); err != nil {
					return nil, err
				}
			}
		}
		var lost *RecordLoss
		switch {
		case m.Source:
			// A failback: the target's disks, as its machine left them,
			// against the source's after the final reverse copy.
			if from, err := r.Protection.RecoveredDisks(ctx, m.VM); err == nil && len(from) > 0 {
				lost = r.countLoss(ctx, m.VM, from, disks)
			}
		case !m.Test:
			if from, err := r.Protection.SourceDisks(ctx, m.VM); err == nil {
				lost = r.countLoss(ctx, m.VM, from, disks)
			}
		}
		boot := m.Boot
		if len(boot.Command) > 0 && boot.Command[0] == "standby" && r.Executable != "" {
			boot.Command = append([]string{r.Executable}, boot.Command[1:]...)
		}
		vm := provider.VM{Site: m.Site, Name: m.Name, NICs: m.NICs, Disks: disks, Boot: boot}
		if err := r.Sites.StartVM(ctx, job, vm); err != nil {
			return nil, fmt.Errorf("boot %s at %s: %w", m.Name, m.Site, err)
		}
		out.Machines = append(out.Machines, BootedMachine{VM: m.VM, Site: m.Site, Name: m.Name, Point: pt, Records: lost})
	}
	// Machines of a group start in parallel; the group is up when every
	// health check passes.
	for i, m := range bp.Machines {
		if m.Check == nil {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, m.Wait.Duration)
		res, err := provider.WaitCheck(wctx, r.Sites, provider.Check{From: m.Check.From, HTTP: m.Check.HTTP, TCP: m.Check.TCP}, 100*time.Millisecond)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s did not answer its health check %s%s: %s: %w", m.Name, m.Check.HTTP, m.Check.TCP, res.Detail, err)
		}
		out.Machines[i].Healthy = r.clock().Now()
	}
	return mustJSON(out), nil
}

// countLoss compares the workload's records on the disks a machine moves
// from, as they were left, with those on the disks it boots from.
func (r *Runner) countLoss(ctx context.Context, vm string, src, recovered []provider.Disk) *RecordLoss {
	if r.Records == nil {
		return nil
	}
	at, ok := r.Records.Records(ctx, vm, src)
	if !ok {
		return nil
	}
	got, ok := r.Records.Records(ctx, vm, recovered)
	if !ok {
		return nil
	}
	l := &RecordLoss{AtSource: at, Recovered: got}
	if at > got {
		l.Lost = at - got
	}
	return l
}

func (r *Runner) clock() clock.Clock {
	if r.Clock == nil {
		return clock.Real{}
	}
	return r.Clock
}

func (r *Runner) check(ctx context.Context, s Step) (json.RawMessage, error) {
	var c CheckParams
	if err := json.Unmarshal(s.Params, &c); err != nil {
		return nil, Permanent(err)
	}
	timeout := c.Timeout.Duration
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := provider.WaitCheck(wctx, r.Sites, provider.Check{From: c.From, HTTP: c.HTTP, TCP: c.TCP}, 200*time.Millisecond)
	if err != nil {
		if res.Detail == "" {
			return nil, Permanent(err)
		}
		return mustJSON(res), Permanent(fmt.Errorf("check from %s to %s%s failed: %s", c.From, c.HTTP, c.TCP, res.Detail))
	}
	return mustJSON(res), nil
}

func (r *Runner) script(ctx context.Context, s Step) (json.RawMessage, error) {
	var p ScriptParams
	if err := json.Unmarshal(s.Params, &p); err != nil || len(p.Command) == 0 {
		return nil, Permanent(fmt.Errorf("step %s: no command", s.ID))
	}
	cmd := exec.CommandContext(ctx, p.Command[0], p.Command[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return mustJSON(map[string]string{"output": tail(string(out), 2000)}), fmt.Errorf("script %s: %w: %s", strings.Join(p.Command, " "), err, tail(string(out), 400))
	}
	return mustJSON(map[string]string{"output": tail(string(out), 2000)}), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// cleanup removes everything a job made (a drill's machines and test
// network) and the disks it booted, and proves nothing is left.
func (r *Runner) cleanup(ctx context.Context, _ string, s Step) error {
	var p PinParams
	if err := json.Unmarshal(s.Params, &p); err != nil || p.Job == "" {
		return Permanent(fmt.Errorf("step %s: no job to clean up", s.ID))
	}
	if err := provider.Cleanup(ctx, r.Sites, p.Job); err != nil {
		return err
	}
	left, err := r.Sites.List(ctx, provider.Filter{Job: p.Job})
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("cleanup of %s left %d resources, first %s", p.Job, len(left), left[0].Ref)
	}
	if err := r.Protection.Release(ctx, filepath.Join(r.Dir, p.Job)); err != nil {
		return fmt.Errorf("cleanup of %s: %w", p.Job, err)
	}
	if err := os.RemoveAll(filepath.Join(r.Dir, p.Job)); err != nil {
		return fmt.Errorf("cleanup of %s: remove its disks: %w", p.Job, err)
	}
	return nil
}
