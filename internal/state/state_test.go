package state_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/state"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

func open(t *testing.T) (*state.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := state.Open(context.Background(), path, clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func TestOpenPragmasAndVersion(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	v, err := db.Version(ctx)
	if err != nil || v != state.SchemaVersion() {
		t.Fatalf("version = %d, %v; want %d", v, err, state.SchemaVersion())
	}
	db.Close()
	// Reopening migrates nothing and keeps the version.
	db2, err := state.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if v, _ := db2.Version(ctx); v != state.SchemaVersion() {
		t.Fatalf("after reopen version = %d", v)
	}
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var mode string
	if err := raw.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	db.Close()
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	_, err = state.Open(ctx, path, nil)
	if !errors.Is(err, state.ErrNewerSchema) || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("open newer schema: err = %v; want ErrNewerSchema naming version 99", err)
	}
}

func TestJobRoundTrip(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	job := state.Job{ID: "j1", Operation: "drill", Plan: "app", Status: "pending", Created: t0, Params: []byte(`{"point":"latest"}`)}
	steps := []state.Step{
		{JobID: "j1", ID: "a", Action: "pin-point", Resource: "vm/web", DependsOn: nil, Policy: "stop", Timeout: time.Minute, Retries: 3, Backoff: time.Second, Status: "pending"},
		{JobID: "j1", ID: "b", Action: "manual", Resource: "circuits/c1", Detail: "raise bandwidth", DependsOn: []string{"a"}, Manual: true, Policy: "ask", Params: []byte(`{"x":1}`), Status: "pending"},
	}
	var ev state.Event
	err := db.Update(ctx, func(tx *state.Tx) error {
		if err := tx.InsertJob(job, steps); err != nil {
			return err
		}
		var err error
		ev, err = tx.AppendEvent(state.Event{Job: "j1", Kind: "job", Status: "pending", Message: "created"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 1 || !ev.Time.Equal(t0) {
		t.Fatalf("event = %+v; want seq 1 at the clock's time", ev)
	}
	// A job is created once.
	if err := db.Update(ctx, func(tx *state.Tx) error { return tx.InsertJob(job, nil) }); err == nil {
		t.Fatal("inserting a job twice: want an error")
	}
	steps[1].Status, steps[1].Attempts, steps[1].Started, steps[1].Error, steps[1].Output = "waiting", 2, t0.Add(time.Second), "boom", []byte(`{"ok":false}`)
	job.Status, job.Started, job.Report, job.Error = "waiting", t0.Add(time.Second), []byte(`{"rto":1}`), "step b failed"

	err = db.Update(ctx, func(tx *state.Tx) error {
		if err := tx.UpdateStep(steps[1]); err != nil {
			return err
		}
		if err := tx.UpdateJob(job); err != nil {
			return err
		}
		_, err := tx.AppendEvent(state.Event{Job: "j1", Step: "b", Kind: "step", Status: "waiting", Message: "waiting for an ack"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	gotJob, gotSteps, err := db.Job(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotJob, job) {
		t.Errorf("job = %+v\nwant %+v", gotJob, job)
	}
	steps[0].DependsOn = []string{}
	steps[1].Position = 1
	if !reflect.DeepEqual(gotSteps, steps) {
		t.Errorf("steps = %+v\nwant %+v", gotSteps, steps)
	}
	evs, err := db.Events(ctx, "j1", 1, 0)
	if err != nil || len(evs) != 1 || evs[0].Seq != 2 || evs[0].Step != "b" {
		t.Fatalf("events after 1 = %+v, %v", evs, err)
	}
	if _, _, err := db.Job(ctx, "nope"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("missing job: err = %v; want ErrNotFound", err)
	}
	if err := db.Update(ctx, func(tx *state.Tx) error { return tx.UpdateStep(state.Step{JobID: "j1", ID: "zz"}) }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("update missing step: err = %v; want ErrNotFound", err)
	}
	jobs, err := db.Jobs(ctx, state.JobFilter{Status: []string{"waiting", "running"}})
	if err != nil || len(jobs) != 1 || jobs[0].ID != "j1" {
		t.Fatalf("jobs = %+v, %v", jobs, err)
	}
	if jobs, _ := db.Jobs(ctx, state.JobFilter{Status: []string{"succeeded"}}); len(jobs) != 0 {
		t.Fatalf("succeeded jobs = %+v; want none", jobs)
	}
}

func TestFailedUpdateKeepsNothing(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	boom := errors.New("boom")
	err := db.Update(ctx, func(tx *state.Tx) error {
		if err := tx.InsertJob(state.Job{ID: "j", Status: "pending", Created: t0}, nil); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := db.Job(ctx, "j"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("job of a rolled back update: err = %v; want ErrNotFound", err)
	}
}

func TestConcurrentWritersGetDistinctSeqs(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	if err := db.Update(ctx, func(tx *state.Tx) error {
		return tx.InsertJob(state.Job{ID: "j", Status: "running", Created: t0}, nil)
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 80)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				errs <- db.Update(ctx, func(tx *state.Tx) error {
					_, err := tx.AppendEvent(state.Event{Job: "j", Kind: "step", Message: fmt.Sprint(g, i)})
					return err
				})
			}
		}()
		// Readers run alongside the writer.
		if _, err := db.Events(ctx, "j", 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	evs, err := db.Events(ctx, "", 0, 0)
	if err != nil || len(evs) != 80 {
		t.Fatalf("events = %d, %v; want 80", len(evs), err)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
}

func TestPinsProtectionFences(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	err := db.Update(ctx, func(tx *state.Tx) error {
		for _, p := range []state.Pin{{Job: "j1", VM: "web", Point: 7}, {Job: "j1", VM: "web", Point: 7}, {Job: "j1", VM: "db", Point: 3}, {Job: "j2", VM: "web", Point: 7}} {
			if err := tx.Pin(p); err != nil {
				return err
			}
		}
		if err := tx.SetProtection(state.Protection{VM: "web", State: "protecting", RPO: 5 * time.Second, LastPoint: 7, LastPointAt: t0}); err != nil {
			return err
		}
		if err := tx.SetProtection(state.Protection{VM: "web", State: "failed-over", Reason: "job j1", RPO: 6 * time.Second, LastPoint: 8, LastPointAt: t0}); err != nil {
			return err
		}
		if err := tx.Fence(state.Fence{Scope: "vm", Name: "web", Reason: "failed over", Job: "j1"}); err != nil {
			return err
		}
		return tx.Fence(state.Fence{Scope: "vm", Name: "web", Reason: "again", Job: "j9"})
	})
	if err != nil {
		t.Fatal(err)
	}
	pins, err := db.Pins(ctx, "web")
	if err != nil || len(pins) != 2 || pins[0].Job != "j1" || pins[1].Job != "j2" || pins[0].Point != 7 {
		t.Fatalf("pins of web = %+v, %v", pins, err)
	}
	if err := db.Update(ctx, func(tx *state.Tx) error { return tx.Unpin("j1", "") }); err != nil {
		t.Fatal(err)
	}
	if pins, _ := db.Pins(ctx, ""); len(pins) != 1 || pins[0].Job != "j2" {
		t.Fatalf("pins after unpin j1 = %+v", pins)
	}
	p, err := db.Protection(ctx, "web")
	if err != nil || p.State != "failed-over" || p.LastPoint != 8 || p.RPO != 6*time.Second || !p.Updated.Equal(t0) {
		t.Fatalf("protection = %+v, %v", p, err)
	}
	if _, err := db.Protection(ctx, "nope"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("protection of unknown vm: %v", err)
	}
	f, ok, err := db.Fenced(ctx, "vm", "web")
	if err != nil || !ok || f.Job != "j1" {
		t.Fatalf("fence = %+v %v %v; want the first fence, by j1", f, ok, err)
	}
	if err := db.Update(ctx, func(tx *state.Tx) error { return tx.Unfence("vm", "web") }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.Fenced(ctx, "vm", "web"); ok {
		t.Fatal("fence still stands after Unfence")
	}
	if fs, _ := db.Fences(ctx); len(fs) != 0 {
		t.Fatalf("fences = %+v", fs)
	}
}
