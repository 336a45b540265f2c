package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/server"
)

// Plan stages: where a recovery plan stands.
const (
	StageProtected   = "protected"
	StageFailedOver  = "failed-over"
	StageCommitted   = "committed"
	StageReprotected = "reprotected"
)

type planState struct {
	stage     string
	running   *recovery.Job // an operation of the plan not finished
	lastDrill string
	failover  string // the job of the last failover
}

var active = []api.Status{api.StatusPending, api.StatusRunning, api.StatusWaiting}

// planState reads where a plan stands from its jobs, newest first: the
// newest succeeded failover, commit, reprotect or failback decides.
func (d *Daemon) planState(ctx context.Context, plan string) (planState, error) {
	st := planState{stage: StageProtected}
	js, err := d.Driver.Jobs(ctx, recovery.JobFilter{Plan: plan})
	if err != nil {
		return st, err
	}
	decided := false
	for i := range js {
		j := js[i]
		if slices.Contains(active, j.Status) && j.Operation != recovery.OpDrillCleanup && st.running == nil {
			st.running = &js[i]
		}
		if j.Operation == recovery.OpDrill && st.lastDrill == "" {
			st.lastDrill = j.ID
		}
		if j.Status != api.StatusSucceeded || decided {
			continue
		}
		switch j.Operation {
		case recovery.OpFailover:
			st.stage, decided, st.failover = StageFailedOver, true, j.ID
		case recovery.OpCommit:
			st.stage, decided = StageCommitted, true
		case recovery.OpReprotect:
			st.stage, decided = StageReprotected, true
		case recovery.OpFailback:
			st.stage, decided = StageProtected, true
		}
	}
	if st.stage == StageCommitted || st.stage == StageReprotected {
		// The failover that was committed, for commit's pins.
		for _, j := range js {
			if j.Operation == recovery.OpFailover && j.Status == api.StatusSucceeded {
				st.failover = j.ID
				break
			}
		}
	}
	return st, nil
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), recovery.ErrConflict)
}

// Operate checks that an operation fits where the plan stands, creates its
// job and starts it in the background. A refusal changes nothing.
func (d *Daemon) Operate(ctx context.Context, op, plan string, req api.OperationRequest) (recovery.Job, error) {
	st, err := d.planState(ctx, plan)
	if err != nil {
		return recovery.Job{}, err
	}
	if st.running != nil && op != api.OpDrillCleanup {
		return recovery.Job{}, conflict("plan %s has a %s running (job %s, %s); wait for it, or resume it with standby jobs resume %s", plan, st.running.Operation, st.running.ID, st.running.Status, st.running.ID)
	}
	var j recovery.Job
	switch op {
	case api.OpDrill:
		if st.stage != StageProtected {
			return recovery.Job{}, conflict("plan %s is %s: a drill tests a failover of a protected plan", plan, st.stage)
		}
		j, err = d.Planner.Drill(plan)
	case api.OpDrillCleanup:
		drill := req.Drill
		if drill == "" {
			drill = st.lastDrill
		}
		if drill == "" {
			return recovery.Job{}, conflict("plan %s has no drill to clean up", plan)
		}
		j, err = d.Planner.DrillCleanup(plan, drill)
	case api.OpFailover:
		if st.stage != StageProtected {
			return recovery.Job{}, conflict("plan %s is %s already; commit, reprotect and fail back before failing over again", plan, st.stage)
		}
		j, err = d.Planner.Failover(plan, recovery.FailoverOptions{Planned: req.Planned, Point: req.Point})
	case api.OpCommit:
		if st.stage != StageFailedOver {
			return recovery.Job{}, conflict("plan %s is %s: commit follows a failover", plan, st.stage)
		}
		j, err = d.Planner.Commit(plan, st.failover)
	case api.OpReprotect:
		if st.stage != StageCommitted {
			return recovery.Job{}, conflict("plan %s is %s: reprotect follows a committed failover (standby commit %s)", plan, st.stage, plan)
		}
		j, err = d.Planner.Reprotect(plan)
	case api.OpFailback:
		if st.stage != StageReprotected {
			return recovery.Job{}, conflict("plan %s is %s: fail back after reprotect, so that nothing written at the target is lost", plan, st.stage)
		}
		j, err = d.Planner.Failback(plan)
	default:
		return recovery.Job{}, fmt.Errorf("no operation %q: %w", op, recovery.ErrInvalid)
	}
	if err != nil {
		return recovery.Job{}, err
	}
	j = recovery.Tag(j, recovery.NewJobID(d.clk, j.Operation))
	if _, err := d.Driver.Create(ctx, j); err != nil {
		return recovery.Job{}, err
	}
	return d.Driver.Start(ctx, j.ID, api.ResumeRequest{})
}

// Status is the replication state of every VM and each plan's stage.
func (d *Daemon) Status(ctx context.Context) (api.StatusReport, error) {
	out := api.StatusReport{Spec: d.o.Spec.Name, VMs: d.Health(), Plans: map[string]string{}}
	for _, p := range d.o.Spec.Recovery.Plans {
		st, err := d.planState(ctx, p.Name)
		if err != nil {
			return out, err
		}
		out.Plans[p.Name] = st.stage
	}
	return out, nil
}

// Points lists a VM's recovery points.
func (d *Daemon) Points(ctx context.Context, vm string) ([]api.Point, error) {
	if d.o.Spec.VM(vm) == nil {
		return nil, fmt.Errorf("no protected virtual machine %q: %w", vm, recovery.ErrNotFound)
	}
	ps, err := d.Protector.Points(ctx, vm)
	if err != nil {
		return nil, err
	}
	out := make([]api.Point, 0, len(ps))
	for _, p := range ps {
		out = append(out, api.Point{VM: vm, Seq: p.Seq, Time: p.Time, Kind: p.Kind})
	}
	return out, nil
}

// AdminToken returns the daemon's admin token, made on first use and kept
// in Dir/admin.token (mode 0600); the server keeps only its hash.
func (d *Daemon) AdminToken() (string, error) {
	path := filepath.Join(d.o.Dir, "admin.token")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("daemon: write %s: %w", path, err)
	}
	return tok, nil
}

// Serve runs the HTTP API on ln until ctx ends.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener, extra []server.Token) error {
	tok, err := d.AdminToken()
	if err != nil {
		return err
	}
	admin, err := server.ParseToken("admin " + server.HashToken(tok) + " daemon-admin")
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Jobs: d.Driver, Ops: d, Tokens: append([]server.Token{admin}, extra...)})
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return nil
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
