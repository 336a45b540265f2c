package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/server"
)

// fakeJobs serves fixed jobs, newest first.
type fakeJobs struct {
	jobs   []recovery.Job
	events []api.Event
}

func (f *fakeJobs) Jobs(ctx context.Context, flt recovery.JobFilter) ([]recovery.Job, error) {
	var out []recovery.Job
	for _, j := range f.jobs {
		if flt.Plan != "" && j.Plan != flt.Plan {
			continue
		}
		j.Steps = nil
		out = append(out, j)
		if flt.Limit > 0 && len(out) == flt.Limit {
			break
		}
	}
	return out, nil
}

func (f *fakeJobs) Job(ctx context.Context, id string) (recovery.Job, error) {
	for _, j := range f.jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return recovery.Job{}, fmt.Errorf("job %s: %w", id, recovery.ErrNotFound)
}

func (f *fakeJobs) Start(ctx context.Context, id string, req api.ResumeRequest) (recovery.Job, error) {
	return recovery.Job{}, fmt.Errorf("the dashboard never starts a job: %w", recovery.ErrInvalid)
}

func (f *fakeJobs) Events(ctx context.Context, id string, after int64) ([]api.Event, error) {
	var out []api.Event
	for _, ev := range f.events {
		if ev.Job == id && ev.Seq > after {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (f *fakeJobs) Subscribe(job string) (<-chan api.Event, func()) {
	return make(chan api.Event), func() {}
}

func (f *fakeJobs) Observe(fn func(api.Event)) {}

// fakeOps serves a fixed status and points.
type fakeOps struct {
	status api.StatusReport
	points map[string][]api.Point
}

func (o *fakeOps) Operate(ctx context.Context, op, plan string, req api.OperationRequest) (recovery.Job, error) {
	return recovery.Job{}, errors.New("the dashboard never operates")
}

func (o *fakeOps) Status(ctx context.Context) (api.StatusReport, error) { return o.status, nil }

func (o *fakeOps) Points(ctx context.Context, vm string) ([]api.Point, error) {
	ps, ok := o.points[vm]
	if !ok {
		return nil, fmt.Errorf("no protected virtual machine %q: %w", vm, recovery.ErrNotFound)
	}
	return ps, nil
}

var uiNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// failoverJob is a finished failover that recovered web from point 40,
// taken 90 s before the job started, and whose check passed 150 s in.
func failoverJob() recovery.Job {
	start := uiNow.Add(-time.Hour)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	boot, _ := json.Marshal(recovery.BootOutput{Machines: []recovery.BootedMachine{{
		VM: "web", Site: "dr", Name: "web", Point: recovery.Point{Seq: 40, Time: start.Add(-90 * time.Second), Kind: "crash"},
		Records: &recovery.RecordLoss{AtSource: 321, Recovered: 309, Lost: 12},
	}}})
	j := recovery.Job{
		ID: "failover-20250301t110000-abc123", Operation: recovery.OpFailover, Plan: "app", Status: api.StatusSucceeded,
		Created: start, Started: start, Finished: at(160),
		Steps: []recovery.Step{
			{ID: "pin-web", Action: recovery.ActPinPoint, Resource: "vms/web", Status: api.StatusSucceeded, Attempts: 1, Started: at(0), Finished: at(2)},
			{ID: "vnet-hub", Action: netplan.ActCreateVNet, Resource: "vnets/hub-asr", Status: api.StatusSucceeded, Attempts: 2, Started: at(2), Finished: at(12), DependsOn: []string{"pin-web"}},
			{ID: "boot-web", Action: recovery.ActBootMachine, Resource: "app/front", Status: api.StatusSucceeded, Attempts: 1, Started: at(12), Finished: at(72), Output: boot},
			{ID: "check-web", Action: netplan.ActRunCheck, Resource: "app/front/post[0]", Detail: "from client http://web:8080/health", Status: api.StatusSucceeded, Attempts: 1, Started: at(72), Finished: at(150)},
			{ID: "note", Action: "run-script", Resource: "app/front/post[1]", Status: api.StatusFailed, Attempts: 1, OnFailure: api.PolicyProceed, Started: at(150), Finished: at(160), Error: "script exited 1: <no mail relay>"},
		},
	}
	j.Report = recovery.ReportJSON(j)
	return j
}

// drillJob runs: one step done, one running, one to come.
func drillJob() recovery.Job {
	start := uiNow.Add(-20 * time.Second)
	return recovery.Job{
		ID: "drill-20250301t115940-def456", Operation: recovery.OpDrill, Plan: "web-plan", Status: api.StatusRunning,
		Created: start, Started: start,
		Steps: []recovery.Step{
			{ID: "pin-web", Action: recovery.ActPinPoint, Status: api.StatusSucceeded, Attempts: 1, Started: start, Finished: start.Add(time.Second)},
			{ID: "test-net", Action: netplan.ActCreateVNet, Status: api.StatusRunning, Attempts: 1, Started: start.Add(time.Second)},
			{ID: "boot-web", Action: recovery.ActBootMachine, Status: api.StatusPending},
		},
	}
}

type uiFixture struct {
	ts     *httptest.Server
	client *http.Client // follows no redirect
}

func setupUI(t *testing.T) *uiFixture {
	t.Helper()
	fj, dj := failoverJob(), drillJob()
	jobs := &fakeJobs{
		jobs: []recovery.Job{dj, fj},
		events: []api.Event{
			{Seq: 1, Time: fj.Started, Job: fj.ID, Kind: api.EventJob, Status: api.StatusRunning},
			{Seq: 2, Time: fj.Finished, Job: fj.ID, Kind: api.EventJob, Status: api.StatusSucceeded},
			{Seq: 3, Time: dj.Started, Job: dj.ID, Kind: api.EventJob, Status: api.StatusRunning},
			{Seq: 4, Time: dj.Started, Job: dj.ID, Step: "test-net", Kind: api.EventStep, Status: api.StatusRunning},
		},
	}
	ops := &fakeOps{
		status: api.StatusReport{
			Spec: "contoso",
			VMs: []api.VMStatus{
				{VM: "web", State: "protected", LastPoint: 42, LastTime: uiNow.Add(-30 * time.Second), RPO: "30s", RPONanos: int64(30 * time.Second), Shipped: 3 << 20},
				{VM: "db", State: "protected", LastPoint: 7, LastTime: uiNow.Add(-20 * time.Minute), RPO: "20m0s", RPONanos: int64(20 * time.Minute), Alert: true, Shipped: 5 << 30,
					Threshold: "15m0s", ThresholdNanos: int64(15 * time.Minute), Capture: "tracked"},
				{VM: "cache", State: "initial-sync", Reason: "copied 40% of disk0", Progress: &api.Progress{Done: 1 << 29, Total: 1 << 30}},
				{VM: "queue", State: "error", Reason: "scan disk0: <input/output error>", LastPoint: 3, LastTime: uiNow.Add(-2 * time.Minute), RPO: "2m0s", RPONanos: int64(2 * time.Minute)},
			},
			Plans: map[string]string{"app": "failed-over", "web-plan": "protected"},
		},
		points: map[string][]api.Point{
			"web": {
				{VM: "web", Seq: 38, Time: uiNow.Add(-5 * time.Minute), Kind: "crash"},
				{VM: "web", Seq: 39, Time: uiNow.Add(-4 * time.Minute), Kind: "app"},
				{VM: "web", Seq: 40, Time: uiNow.Add(-3 * time.Minute), Kind: "crash", Pinned: true},
				{VM: "web", Seq: 41, Time: uiNow.Add(-2 * time.Minute), Kind: "crash"},
				{VM: "web", Seq: 42, Time: uiNow.Add(-30 * time.Second), Kind: "app", Bytes: 1536},
			},
			"db":    {{VM: "db", Seq: 7, Time: uiNow.Add(-20 * time.Minute), Kind: "crash"}},
			"cache": {},
			"queue": {{VM: "queue", Seq: 3, Time: uiNow.Add(-2 * time.Minute), Kind: "crash"}},
		},
	}
	file := fmt.Sprintf("reader %s\nadmin %s\n", server.HashToken(readerSecret), server.HashToken(adminSecret))
	tokens, err := server.ParseTokens(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Jobs: jobs, Ops: ops, Tokens: tokens, Clock: clock.NewFake(uiNow)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &uiFixture{ts: ts, client: client}
}

// get fetches path with a bearer secret or a cookie (either may be empty).
func (f *uiFixture) get(t *testing.T, path, secret string, cookie *http.Cookie) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", f.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (f *uiFixture) login(t *testing.T, token, next string) *http.Response {
	t.Helper()
	form := url.Values{"token": {token}}
	if next != "" {
		form.Set("next", next)
	}
	resp, err := f.client.PostForm(f.ts.URL+"/ui/login", form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), token) {
		t.Errorf("the login answer repeats the token")
	}
	return resp
}

func sessionOf(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "standby_session" {
			return c
		}
	}
	return nil
}

func wantAll(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

func TestUIAuth(t *testing.T) {
	f := setupUI(t)
	if resp, _ := f.get(t, "/", "", nil); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := f.get(t, "/ui", "", nil); resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, path := range []string{"/ui/", "/ui/jobs/" + failoverJob().ID, "/ui/vms/web"} {
		resp, _ := f.get(t, path, "", nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next="+url.QueryEscape(path) {
			t.Errorf("%s without a token: %d to %q", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := f.get(t, "/ui/", "wrong", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("/ui/ with an unknown bearer token: %d", resp.StatusCode)
	}
	if resp, _ := f.get(t, "/ui/", readerSecret, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/ui/ with a bearer token: %d", resp.StatusCode)
	}

	resp, body := f.get(t, "/ui/login?next=/ui/vms/web", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login form: %d", resp.StatusCode)
	}
	wantAll(t, "the login form", body, `method="post" action="/ui/login"`, `name="token" type="password"`, `name="next" value="/ui/vms/web"`, "admin.token")

	bad := f.login(t, "not-a-token-at-all", "")
	if bad.StatusCode != http.StatusUnauthorized || sessionOf(bad) != nil {
		t.Errorf("wrong token: %d, cookie %v", bad.StatusCode, sessionOf(bad))
	}
	if hashed := f.login(t, server.HashToken(readerSecret), ""); hashed.StatusCode != http.StatusUnauthorized {
		t.Errorf("the token's hash signed in: %d", hashed.StatusCode)
	}

	good := f.login(t, readerSecret, "/ui/vms/web")
	c := sessionOf(good)
	if good.StatusCode != http.StatusSeeOther || good.Header.Get("Location") != "/ui/vms/web" || c == nil {
		t.Fatalf("good token: %d to %q, cookie %v", good.StatusCode, good.Header.Get("Location"), c)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || strings.Contains(c.Value, readerSecret) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, path /ui/, no token in it", c)
	}
	resp, body = f.get(t, "/ui/", "", c)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/ui/ with the cookie: %d", resp.StatusCode)
	}
	wantAll(t, "the overview", body, "signed in as reader", `action="/ui/logout"`)
	if resp, _ := f.get(t, "/v1/jobs", "", c); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the API took the dashboard's cookie: %d", resp.StatusCode)
	}
	if forged := (&http.Cookie{Name: "standby_session", Value: readerSecret}); true {
		if resp, _ := f.get(t, "/ui/", "", forged); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("a cookie holding the token itself opened /ui/: %d", resp.StatusCode)
		}
	}

	// Elsewhere is never a place to return to.
	for _, next := range []string{"https://example.org/", "//example.org/", "/v1/jobs", "/ui/login"} {
		if resp := f.login(t, adminSecret, next); resp.Header.Get("Location") != "/ui/" {
			t.Errorf("next %q: sent to %q", next, resp.Header.Get("Location"))
		}
	}

	req, _ := http.NewRequest("POST", f.ts.URL+"/ui/logout", nil)
	req.AddCookie(c)
	out, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	if out.StatusCode != http.StatusSeeOther || out.Header.Get("Location") != "/ui/login" {
		t.Errorf("logout: %d to %q", out.StatusCode, out.Header.Get("Location"))
	}
	if resp, _ := f.get(t, "/ui/", "", c); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("/ui/ after logout: %d", resp.StatusCode)
	}
}

func TestUIOverview(t *testing.T) {
	f := setupUI(t)
	resp, body := f.get(t, "/ui/", readerSecret, nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("overview: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("overview CSP %q", csp)
	}
	wantAll(t, "the overview", body,
		"contoso", `data-refresh="5"`,
		`<strong>RPO alert:</strong> <a href="/ui/vms/db">db</a>`, ">20m<", "above threshold",
		`<a href="/ui/vms/web">web</a>`, ">30s<", "within threshold", "#42", `<span class="kind app">app</span>`, "3.0 MiB", "5.0 GiB",
		"initial-sync", "copied 40% of disk0", "50% of 1.0 GiB",
		"threshold 15m", "above the threshold of its policy (15m)", "capture: tracked",
		"<strong>Replication failing:</strong>", "scan disk0: &lt;input/output error&gt;",
		"failed-over", "commit the failover",
		`href="/ui/jobs/`+failoverJob().ID+`"`, `href="/ui/jobs/`+drillJob().ID+`"`,
		"2025-03-01 11:00:00 UTC", "1h ago", "2m 40s", "20s so far",
	)
	if strings.Contains(body, "<input/output") {
		t.Error("the overview does not escape a reason")
	}
	if n := strings.Count(body, "RPO alert:"); n != 1 {
		t.Errorf("%d RPO alerts, want 1 (db only)", n)
	}
}

func TestUIVM(t *testing.T) {
	f := setupUI(t)
	resp, body := f.get(t, "/ui/vms/web", readerSecret, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vm page: %d", resp.StatusCode)
	}
	if n := strings.Count(body, `<circle class="mark `); n != 5 {
		t.Errorf("%d marks on the timeline, want one per point (5)", n)
	}
	if n := strings.Count(body, `<circle class="mark app"`); n != 2 {
		t.Errorf("%d app marks, want 2", n)
	}
	if n := strings.Count(body, `<circle class="pin"`); n != 1 {
		t.Errorf("%d pinned marks, want 1", n)
	}
	wantAll(t, "the vm page", body, "<svg", "point 40, crash, 2025-03-01 11:57:00 UTC, pinned",
		"5 points retained: 3 crash-consistent,", "2 application-consistent, 1 pinned", "#38", "#42", "1.5 KiB", "within threshold", "now")
	// Newest first in the table.
	if strings.Index(body, ">#42<") > strings.Index(body, ">#38<") {
		t.Error("the table does not list the newest point first")
	}

	resp, body = f.get(t, "/ui/vms/nope", readerSecret, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("unknown vm: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	wantAll(t, "the 404 page", body, "Not Found", "no protected virtual machine &#34;nope&#34;")

	if resp, _ := f.get(t, "/ui/nothing/here", readerSecret, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown page: %d", resp.StatusCode)
	}
}

func TestUIJob(t *testing.T) {
	f := setupUI(t)
	j := failoverJob()
	resp, body := f.get(t, "/ui/jobs/"+j.ID, readerSecret, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("job page: %d", resp.StatusCode)
	}
	wantAll(t, "the job page", body,
		"failover", "of plan app", "succeeded",
		`<span class="big" title="2m30s">2m 30s</span>`, // RTO: start to the last check
		"#40", "1m 30s", // data loss: the point's age at the start
		"12 of 321 lost", // and the workload's own count
		"from client http://web:8080/health",
		"script exited 1: &lt;no mail relay&gt;", "the job went on", "1 failed", "2 attempts",
	)
	for _, s := range j.Steps {
		wantAll(t, "the job page", body, "<code>"+s.ID+"</code>")
	}
	if n := strings.Count(body, `<svg class="bar"`); n != len(j.Steps) {
		t.Errorf("%d step bars, want %d", n, len(j.Steps))
	}
	// The boot step ran from 12 s to 72 s of the job's 160 s.
	wantAll(t, "the job page", body, `x="75" y="1" width="375"`)
	if strings.Contains(body, "data-events") {
		t.Error("a finished job's page follows its events")
	}

	d := drillJob()
	_, body = f.get(t, "/ui/jobs/"+d.ID, readerSecret, nil)
	wantAll(t, "a running job's page", body, `data-events="/ui/jobs/`+d.ID+`/events?after=4"`, "running", "19s so far", "measured when the job succeeds")

	resp, body = f.get(t, "/ui/jobs/nope", readerSecret, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown job: %d", resp.StatusCode)
	}
	wantAll(t, "the 404 page", body, "job nope: not found")
}

func TestUIJobEvents(t *testing.T) {
	f := setupUI(t)
	c := sessionOf(f.login(t, readerSecret, ""))
	req, _ := http.NewRequest("GET", f.ts.URL+"/ui/jobs/"+failoverJob().ID+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.AddCookie(c)
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events with the cookie: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got []api.Event
	readSSE(t, resp.Body, func(ev api.Event) { got = append(got, ev) })
	if len(got) != 2 || got[1].Status != api.StatusSucceeded {
		t.Fatalf("events: %+v", got)
	}
}

func TestUIStatic(t *testing.T) {
	f := setupUI(t)
	for path, ctype := range map[string]string{"/ui/static/style.css": "text/css", "/ui/static/ui.js": "text/javascript"} {
		resp, body := f.get(t, path, "", nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || body == "" {
			t.Errorf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := f.get(t, "/ui/static/", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("static listing: %d", resp.StatusCode)
	}
	// Offline: nothing is loaded from another host.
	for _, path := range []string{"/ui/", "/ui/vms/web", "/ui/static/style.css"} {
		_, body := f.get(t, path, readerSecret, nil)
		for _, ref := range []string{`src="http`, `href="http`, `src="//`, `href="//`, "@import", "url("} {
			if strings.Contains(body, ref) {
				t.Errorf("%s refers to another host: %s", path, ref)
			}
		}
	}
}
