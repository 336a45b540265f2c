package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/server"
	"github.com/standby-dr/standby/internal/state"
)

// jobsDaemon is the daemon's job side on a real state database: the
// driver over daemon.JobStore, served by the API.
func jobsDaemon(t *testing.T) (*recovery.Driver, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db, err := state.Open(ctx, filepath.Join(t.TempDir(), "state.db"), clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	exec := recovery.ExecutorFunc(func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		if s.Action == "fail" {
			return nil, errors.New("the gateway refused")
		}
		return json.RawMessage(`{}`), nil
	})
	d := recovery.New(daemon.JobStore{DB: db}, exec, recovery.Options{Context: ctx})
	tokens := []server.Token{}
	for role, secret := range map[string]string{"reader": "reader-secret", "operator": "operator-secret"} {
		tok, err := server.ParseToken(role + " " + server.HashToken(secret))
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
	}
	srv, err := server.New(server.Config{Jobs: d, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); cancel(); d.Wait(); db.Close() })
	return d, ts.URL
}

func TestJobsCommands(t *testing.T) {
	d, url := jobsDaemon(t)
	ctx := context.Background()
	j, err := d.Create(ctx, recovery.Job{Operation: "failover", Plan: "app", Steps: []recovery.Step{
		{ID: "net", Action: "create-virtual-network", Resource: "sg/app-asr"},
		{ID: "bw", Action: "manual", Resource: "circuits/c1", Manual: true, Detail: "raise circuit c1 to 1000 Mbps", DependsOn: []string{"net"}},
		{ID: "boot", Action: "failover-virtual-machines", Resource: "group/1", DependsOn: []string{"bw"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Run(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STANDBY_TOKEN", "reader-secret")

	code, out, stderr := run(t, "jobs", "--server", url)
	if code != ExitOK || !strings.Contains(out, j.ID) || !strings.Contains(out, "waiting") {
		t.Fatalf("jobs: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = run(t, "jobs", j.ID, "--server", url)
	if code != ExitOK || !strings.Contains(out, "raise circuit c1") || !strings.Contains(out, "jobs resume "+j.ID+" --ack") {
		t.Fatalf("jobs ID: exit %d\n%s", code, out)
	}
	// A reader may not act; an unknown job and a bad token are bad input.
	code, _, stderr = run(t, "jobs", "resume", j.ID, "--ack", "--server", url)
	if code != ExitBadInput || !strings.Contains(stderr, "operator") {
		t.Fatalf("reader resumes: exit %d %s", code, stderr)
	}
	if code, _, _ = run(t, "jobs", "nope", "--server", url); code != ExitBadInput {
		t.Errorf("unknown job: exit %d", code)
	}
	if code, _, _ = run(t, "jobs", "resume", j.ID, "--ack", "--abort", "--server", url); code != ExitBadInput {
		t.Errorf("--ack --abort: exit %d", code)
	}
	// No daemon there: operational.
	if code, _, _ = run(t, "jobs", "--server", "http://127.0.0.1:1"); code != ExitOperational {
		t.Errorf("no daemon: exit %d", code)
	}

	t.Setenv("STANDBY_TOKEN", "operator-secret")
	code, out, stderr = run(t, "jobs", "resume", j.ID, "--ack", "--server", url, "-o", "json")
	if code != ExitOK {
		t.Fatalf("resume --ack: exit %d\n%s%s", code, out, stderr)
	}
	var got api.Job
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Status != api.StatusSucceeded || len(got.Steps) != 3 {
		t.Fatalf("resume -o json: %v\n%s", err, out)
	}
	// Resuming a finished job does nothing.
	code, out, _ = run(t, "jobs", "resume", j.ID, "--server", url)
	if code != ExitOK || !strings.Contains(out, "succeeded") {
		t.Fatalf("second resume: exit %d\n%s", code, out)
	}

	// A failed job exits 1 and says why.
	f, err := d.Create(ctx, recovery.Job{Operation: "drill", Plan: "app", Steps: []recovery.Step{{ID: "gw", Action: "fail", Resource: "gateway"}}})
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, "jobs", "resume", f.ID, "--server", url)
	if code != ExitFailure || !strings.Contains(out, "the gateway refused") || !strings.Contains(out, "gw") {
		t.Fatalf("failed job: exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "jobs", f.ID, "--follow", "--server", url)
	if code != ExitFailure || !strings.Contains(out, "started") {
		t.Fatalf("--follow of a failed job: exit %d\n%s", code, out)
	}
}
