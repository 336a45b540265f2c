package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/server"
)

// memStore is a recovery.Store in memory, enough to drive a real Driver.
type memStore struct {
	mu     sync.Mutex
	jobs   map[string]recovery.Job
	order  []string
	events []api.Event
}

func (m *memStore) Create(ctx context.Context, j recovery.Job, ev api.Event) (api.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.jobs == nil {
		m.jobs = map[string]recovery.Job{}
	}
	j.Steps = slices.Clone(j.Steps)
	m.jobs[j.ID] = j
	m.order = append(m.order, j.ID)
	return m.append(ev), nil
}

func (m *memStore) append(ev api.Event) api.Event {
	ev.Seq = int64(len(m.events) + 1)
	m.events = append(m.events, ev)
	return ev
}

func (m *memStore) Save(ctx context.Context, tr recovery.Transition) (api.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j := m.jobs[tr.JobID]
	if tr.Job != nil {
		steps := j.Steps
		j = *tr.Job
		j.Steps = steps
	}
	if tr.Step != nil {
		j.Steps = slices.Clone(j.Steps)
		for i := range j.Steps {
			if j.Steps[i].ID == tr.Step.ID {
				j.Steps[i] = *tr.Step
				j.Steps[i].Inputs = nil
			}
		}
	}
	m.jobs[tr.JobID] = j
	return m.append(tr.Event), nil
}

func (m *memStore) Load(ctx context.Context, id string) (recovery.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return recovery.Job{}, fmt.Errorf("job %s: %w", id, recovery.ErrNotFound)
	}
	j.Steps = slices.Clone(j.Steps)
	return j, nil
}

func (m *memStore) Jobs(ctx context.Context, f recovery.JobFilter) ([]recovery.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []recovery.Job
	for i := len(m.order) - 1; i >= 0; i-- {
		j := m.jobs[m.order[i]]
		if len(f.Status) > 0 && !slices.Contains(f.Status, j.Status) {
			continue
		}
		j.Steps = nil
		out = append(out, j)
	}
	return out, nil
}

func (m *memStore) Events(ctx context.Context, job string, after int64) ([]api.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Event
	for _, e := range m.events {
		if e.Seq > after && (job == "" || e.Job == job) {
			out = append(out, e)
		}
	}
	return out, nil
}

const (
	readerSecret   = "r-secret-0123456789"
	operatorSecret = "o-secret-0123456789"
	adminSecret    = "a-secret-0123456789"
)

type fixture struct {
	srv *server.Server
	ts  *httptest.Server
	d   *recovery.Driver
}

func setup(t *testing.T) *fixture {
	t.Helper()
	exec := recovery.ExecutorFunc(func(ctx context.Context, s recovery.Step) (json.RawMessage, error) {
		if s.Action == "fail" {
			return nil, errors.New("boom")
		}
		return nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	d := recovery.New(&memStore{}, exec, recovery.Options{Context: ctx})
	t.Cleanup(func() { cancel(); d.Wait() })
	file := fmt.Sprintf("# tokens\nreader %s ci\n\noperator %s\nadmin %s root\n",
		server.HashToken(readerSecret), server.HashToken(operatorSecret), server.HashToken(adminSecret))
	tokens, err := server.ParseTokens(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Jobs: d, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &fixture{srv: srv, ts: ts, d: d}
}

// call does a request and decodes a JSON answer into out (when not nil).
func (f *fixture) call(t *testing.T, method, path, secret, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, f.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func (f *fixture) waitingJob(t *testing.T) recovery.Job {
	t.Helper()
	j, err := f.d.Create(context.Background(), recovery.Job{Operation: "failover", Plan: "app", Steps: []recovery.Step{
		{ID: "a", Action: "ok", Resource: "r"},
		{ID: "m", Action: "manual", Resource: "circuits/c", Manual: true, DependsOn: []string{"a"}, Detail: "raise bandwidth"},
		{ID: "b", Action: "ok", Resource: "r", DependsOn: []string{"m"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = f.d.Run(context.Background(), j.ID); err != nil || j.Status != api.StatusWaiting {
		t.Fatalf("run: %v %s", err, j.Status)
	}
	return j
}

func TestAuthAndRoles(t *testing.T) {
	f := setup(t)
	j := f.waitingJob(t)
	var e api.ErrorBody
	if code := f.call(t, "GET", "/v1/jobs", "", "", &e); code != 401 || e.Error.Code != api.CodeUnauthorized {
		t.Errorf("no token: %d %+v", code, e)
	}
	if code := f.call(t, "GET", "/v1/jobs", "wrong", "", &e); code != 401 {
		t.Errorf("unknown token: %d", code)
	}
	if code := f.call(t, "GET", "/healthz", "", "", nil); code != 200 {
		t.Errorf("healthz: %d", code)
	}
	if code := f.call(t, "GET", "/metrics", "", "", nil); code != 401 {
		t.Errorf("metrics without a token: %d", code)
	}
	for _, secret := range []string{readerSecret, operatorSecret, adminSecret} {
		if code := f.call(t, "GET", "/v1/jobs", secret, "", nil); code != 200 {
			t.Errorf("GET with %s: %d", secret[:1], code)
		}
	}
	if code := f.call(t, "POST", "/v1/jobs/"+j.ID+"/resume", readerSecret, "", &e); code != 403 || e.Error.Code != api.CodeForbidden {
		t.Errorf("reader resumes: %d %+v", code, e)
	}
	for _, secret := range []string{operatorSecret, adminSecret} {
		if code := f.call(t, "POST", "/v1/jobs/"+j.ID+"/resume", secret, "", nil); code != 202 {
			t.Errorf("resume with %s: %d", secret[:1], code)
		}
	}
}

func TestParseTokens(t *testing.T) {
	h := server.HashToken("s3cret-value")
	for _, bad := range []string{
		"reader s3cret-value",         // a secret where the hash goes
		"root " + h,                   // unknown role
		"reader " + h[:10],            // short hash
		"reader " + h + " name extra", // too many fields
	} {
		_, err := server.ParseTokens(strings.NewReader(bad))
		if err == nil || strings.Contains(err.Error(), "s3cret-value") {
			t.Errorf("%q: err = %v; want an error that does not repeat the secret", bad, err)
		}
	}
	tok, err := server.ParseToken("operator:" + h + ":ci")
	if err != nil || tok.Role != server.RoleOperator || tok.Name != "ci" {
		t.Errorf("flag form: %+v %v", tok, err)
	}
}

func TestJobsEndpoints(t *testing.T) {
	f := setup(t)
	j := f.waitingJob(t)
	var list api.JobList
	if code := f.call(t, "GET", "/v1/jobs?status=waiting,running", readerSecret, "", &list); code != 200 || len(list.Jobs) != 1 || list.Jobs[0].ID != j.ID || list.Jobs[0].Steps != nil {
		t.Fatalf("list: %d %+v", code, list)
	}
	if f.call(t, "GET", "/v1/jobs?status=succeeded", readerSecret, "", &list); len(list.Jobs) != 0 {
		t.Fatalf("succeeded jobs: %+v", list)
	}
	var e api.ErrorBody
	if code := f.call(t, "GET", "/v1/jobs?limit=x", readerSecret, "", &e); code != 400 || e.Error.Code != api.CodeBadRequest {
		t.Errorf("bad limit: %d %+v", code, e)
	}
	var got api.Job
	if code := f.call(t, "GET", "/v1/jobs/"+j.ID, readerSecret, "", &got); code != 200 || len(got.Steps) != 3 || got.Steps[1].Status != api.StatusWaiting || got.Steps[1].Detail != "raise bandwidth" {
		t.Fatalf("get: %d %+v", code, got)
	}
	if code := f.call(t, "GET", "/v1/jobs/nope", readerSecret, "", &e); code != 404 || e.Error.Code != api.CodeNotFound {
		t.Errorf("unknown job: %d %+v", code, e)
	}
	if code := f.call(t, "POST", "/v1/jobs/nope/resume", operatorSecret, "", &e); code != 404 {
		t.Errorf("resume unknown job: %d", code)
	}
	if code := f.call(t, "POST", "/v1/jobs/"+j.ID+"/resume", operatorSecret, `{"ack":true,"force":1}`, &e); code != 400 {
		t.Errorf("unknown field: %d %+v", code, e)
	}
	if code := f.call(t, "POST", "/v1/jobs/"+j.ID+"/resume", operatorSecret, `{"ack":true,"retry":true}`, &e); code != 400 {
		t.Errorf("ack and retry: %d %+v", code, e)
	}
	if code := f.call(t, "GET", "/v1/nothing", readerSecret, "", &e); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
	if code := f.call(t, "POST", "/v1/jobs/"+j.ID+"/resume", operatorSecret, `{"ack":true}`, &got); code != 202 {
		t.Fatalf("ack: %d", code)
	}
	f.d.Wait()
	if f.call(t, "GET", "/v1/jobs/"+j.ID, readerSecret, "", &got); got.Status != api.StatusSucceeded {
		t.Fatalf("after ack: %s", got.Status)
	}
	var evs api.EventList
	if code := f.call(t, "GET", "/v1/jobs/"+j.ID+"/events?after=3", readerSecret, "", &evs); code != 200 || len(evs.Events) == 0 || evs.Events[0].Seq != 4 {
		t.Fatalf("events after 3: %d %+v", code, evs)
	}
	if code := f.call(t, "GET", "/v1/jobs/nope/events", readerSecret, "", &e); code != 404 {
		t.Errorf("events of unknown job: %d", code)
	}
}

// readSSE reads server-sent events until the stream ends.
func readSSE(t *testing.T, body io.Reader, each func(api.Event)) {
	t.Helper()
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var ev api.Event
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("bad event %q: %v", data, err)
			}
			each(ev)
		}
	}
}

func TestEventStream(t *testing.T) {
	f := setup(t)
	j := f.waitingJob(t)
	req, _ := http.NewRequest("GET", f.ts.URL+"/v1/jobs/"+j.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+readerSecret)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got []api.Event
	acked := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		readSSE(t, resp.Body, func(ev api.Event) {
			got = append(got, ev)
			// Once the history is through (the job waits), ack it live.
			if !acked && ev.Kind == api.EventJob && ev.Status == api.StatusWaiting {
				acked = true
				go func() {
					req, _ := http.NewRequest("POST", f.ts.URL+"/v1/jobs/"+j.ID+"/resume", strings.NewReader(`{"ack":true}`))
					req.Header.Set("Authorization", "Bearer "+operatorSecret)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 202 {
						t.Errorf("ack: %d", resp.StatusCode)
					}
				}()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end with the job")
	}
	stored, _ := f.d.Events(context.Background(), j.ID, 0)
	if len(got) != len(stored) {
		t.Fatalf("streamed %d events, stored %d", len(got), len(stored))
	}
	for i := range got {
		if got[i].Seq != stored[i].Seq || got[i].Message != stored[i].Message {
			t.Fatalf("event %d: streamed %+v stored %+v", i, got[i], stored[i])
		}
	}
	if last := got[len(got)-1]; last.Kind != api.EventJob || last.Status != api.StatusSucceeded {
		t.Fatalf("last event %+v", last)
	}
	// A client that reconnects after the last event it saw gets the rest
	// only; a finished job's stream ends at once.
	req.Header.Set("Last-Event-ID", fmt.Sprint(got[len(got)-3].Seq))
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var rest []api.Event
	readSSE(t, resp2.Body, func(ev api.Event) { rest = append(rest, ev) })
	if len(rest) != 2 || rest[1].Seq != got[len(got)-1].Seq {
		t.Fatalf("after Last-Event-ID: %+v", rest)
	}
}

func TestMetrics(t *testing.T) {
	f := setup(t)
	j := f.waitingJob(t)
	if _, err := f.d.Resume(context.Background(), j.ID, api.ResumeRequest{Ack: true}); err != nil {
		t.Fatal(err)
	}
	f.srv.SetRPO("web", 1500*time.Millisecond)
	req, _ := http.NewRequest("GET", f.ts.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+readerSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`standby_job_duration_seconds_count{operation="failover",status="succeeded"} 1`,
		`standby_jobs_finished_total{operation="failover",status="succeeded"} 1`,
		`standby_job_steps_total{status="succeeded"} 3`,
		`standby_job_steps_total{status="waiting"} 1`,
		`standby_rpo_seconds{vm="web"} 1.5`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	f := setup(t)
	req, _ := http.NewRequest("GET", f.ts.URL+"/v1/openapi.yaml", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{"get /healthz", "get /metrics", "get /v1/openapi.yaml", "get /v1/jobs", "get /v1/jobs/{id}", "post /v1/jobs/{id}/resume", "get /v1/jobs/{id}/events",
		"get /", "get /ui/", "get /ui/vms/{vm}", "get /ui/jobs/{id}", "get /ui/jobs/{id}/events", "get /ui/login", "post /ui/login", "post /ui/logout", "get /ui/static/{file}"} {
		method, path, _ := strings.Cut(route, " ")
		if _, ok := doc.Paths[path][method]; !ok {
			t.Errorf("openapi.yaml does not describe %s", route)
		}
	}
}
