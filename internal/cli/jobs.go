package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/api"
)

// defaultServer is where `standby up` listens unless told otherwise.
const defaultServer = "http://127.0.0.1:7420"

type jobsOpts struct {
	server string
	follow bool
}

func newJobsCmd(e *env) *cobra.Command {
	var o jobsOpts
	cmd := &cobra.Command{
		Use:   "jobs [ID]",
		Short: "List the daemon's jobs, or show one with its steps",
		Long: `jobs lists the jobs of the running daemon (drills, failovers, commits,
reprotects, failbacks), newest first; with an ID it shows that job's steps.
--follow prints the job's events as they happen until it ends.

The daemon is reached at --server (or STANDBY_SERVER); the bearer token is
read from STANDBY_TOKEN. A failed job exits 1.`,
		Example: `  standby jobs
  standby jobs 20250301-120000-1a2b3c4d -o json
  standby jobs resume 20250301-120000-1a2b3c4d --ack`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := newAPIClient(o.server)
			if len(args) == 0 {
				return runJobsList(cmd.Context(), e, c)
			}
			return runJobShow(cmd.Context(), e, c, args[0], o.follow)
		},
	}
	cmd.PersistentFlags().StringVar(&o.server, "server", envOr("STANDBY_SERVER", defaultServer), "URL of the daemon's API")
	cmd.Flags().BoolVar(&o.follow, "follow", false, "print the job's events until it ends")
	cmd.AddCommand(newJobsResumeCmd(e, &o))
	return cmd
}

type resumeOpts struct {
	ack, retry, abort bool
	detach            bool
}

func newJobsResumeCmd(e *env, jo *jobsOpts) *cobra.Command {
	var o resumeOpts
	cmd := &cobra.Command{
		Use:   "resume ID [--ack | --retry | --abort]",
		Short: "Resume a job: release a waiting step, retry it, or abort the job",
		Long: `resume lets a job run on and follows it until it ends or waits for an
operator. A job that waits on a manual step goes on with --ack once the step is
done; a step that failed under the ask policy is passed over with --ack, run
again with --retry, or the job is failed with --abort. Resuming a finished job
does nothing.`,
		Example: `  standby jobs resume 20250301-120000-1a2b3c4d --ack`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 0
			for _, b := range []bool{o.ack, o.retry, o.abort} {
				if b {
					n++
				}
			}
			if n > 1 {
				return badInputf("give one of --ack, --retry and --abort")
			}
			return runJobsResume(cmd.Context(), e, newAPIClient(jo.server), args[0], o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.ack, "ack", false, "release the waiting steps: the manual work is done, or go on without the failed step")
	f.BoolVar(&o.retry, "retry", false, "run the waiting failed steps again")
	f.BoolVar(&o.abort, "abort", false, "fail the job; steps not done are skipped")
	f.BoolVar(&o.detach, "detach", false, "return once the daemon has the request, without following the job")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func runJobsList(ctx context.Context, e *env, c *apiClient) error {
	var list api.JobList
	if err := c.do(ctx, "GET", "/v1/jobs", nil, &list); err != nil {
		return err
	}
	return e.render(list, func(w io.Writer) {
		if len(list.Jobs) == 0 {
			fmt.Fprintln(w, "no jobs")
			return
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tOPERATION\tPLAN\tSTATUS\tCREATED\tDURATION")
		for _, j := range list.Jobs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Operation, j.Plan, j.Status, j.Created.Local().Format(time.DateTime), span(j.Started, j.Finished))
		}
		tw.Flush()
	})
}

func runJobShow(ctx context.Context, e *env, c *apiClient, id string, follow bool) error {
	var j api.Job
	if err := c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), nil, &j); err != nil {
		return err
	}
	if follow {
		evs, err := c.events(ctx, id, 0)
		if err != nil {
			return err
		}
		var last int64
		for _, ev := range evs {
			printEvent(e.followWriter(), ev)
			last = ev.Seq
		}
		if !j.Status.Finished() && j.Status != api.StatusWaiting {
			if err := c.follow(ctx, id, last, e.followWriter()); err != nil {
				return err
			}
		}
		if err := c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), nil, &j); err != nil {
			return err
		}
	}
	return renderJob(e, j)
}

func runJobsResume(ctx context.Context, e *env, c *apiClient, id string, o resumeOpts) error {
	// Follow from what happens after this request, not the job's past.
	var last int64
	if !o.detach {
		evs, err := c.events(ctx, id, 0)
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			last = evs[len(evs)-1].Seq
		}
	}
	body, _ := json.Marshal(api.ResumeRequest{Ack: o.ack, Retry: o.retry, Abort: o.abort})
	var j api.Job
	if err := c.do(ctx, "POST", "/v1/jobs/"+url.PathEscape(id)+"/resume", body, &j); err != nil {
		return err
	}
	if !o.detach && !j.Status.Finished() {
		if err := c.follow(ctx, id, last, e.followWriter()); err != nil {
			return err
		}
		if err := c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), nil, &j); err != nil {
			return err
		}
	}
	return renderJob(e, j)
}

// followWriter is where followed events go: stdout as text, nowhere with
// -o json (the final job is the JSON answer).
func (e *env) followWriter() io.Writer {
	if e.output == "json" {
		return io.Discard
	}
	return e.stdout
}

// renderJob prints a job with its steps; a failed job exits 1.
func renderJob(e *env, j api.Job) error {
	err := e.render(j, func(w io.Writer) {
		fmt.Fprintf(w, "job %s: %s of %s, %s", j.ID, j.Operation, j.Plan, j.Status)
		if d := span(j.Started, j.Finished); d != "" {
			fmt.Fprintf(w, " (%s)", d)
		}
		fmt.Fprintln(w)
		if j.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", j.Error)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STEP\tSTATUS\tATTEMPTS\tDURATION\tACTION\tRESOURCE")
		for _, s := range j.Steps {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Status, s.Attempts, span(s.Started, s.Finished), s.Action, s.Resource)
		}
		tw.Flush()
		for _, s := range j.Steps {
			switch {
			case s.Status == api.StatusWaiting && s.Manual:
				fmt.Fprintf(w, "waiting: %s: %s; when it is done: standby jobs resume %s --ack\n", s.ID, s.Detail, j.ID)
			case s.Status == api.StatusWaiting:
				fmt.Fprintf(w, "waiting: %s failed: %s; standby jobs resume %s with --ack (go on), --retry or --abort\n", s.ID, s.Error, j.ID)
			case s.Status == api.StatusFailed:
				fmt.Fprintf(w, "failed: %s: %s\n", s.ID, s.Error)
			}
		}
	})
	if err != nil {
		return err
	}
	if j.Status == api.StatusFailed {
		return errFailed
	}
	return nil
}

// span is the duration from start to end (or "running" times), "" if not started.
func span(start, end *time.Time) string {
	if start == nil {
		return ""
	}
	if end == nil {
		return "since " + start.Local().Format(time.TimeOnly)
	}
	d := end.Sub(*start)
	switch {
	case d >= time.Minute:
		d = d.Round(time.Second)
	case d >= time.Second:
		d = d.Round(10 * time.Millisecond)
	default:
		d = d.Round(time.Millisecond)
	}
	return d.String()
}

// apiClient talks to the daemon's API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(server string) *apiClient {
	return &apiClient{base: strings.TrimRight(server, "/"), token: apiToken(), http: &http.Client{}}
}

// apiToken is STANDBY_TOKEN, else the admin token a local daemon keeps in
// its directory (STANDBY_DIR, default .standby).
func apiToken() string {
	if t := os.Getenv("STANDBY_TOKEN"); t != "" {
		return t
	}
	b, err := os.ReadFile(filepath.Join(envOr("STANDBY_DIR", defaultDir), "admin.token"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (c *apiClient) request(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, badInputf("--server %q: %v", c.base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends a request and decodes the answer into out. The API's errors
// become the command line's: a request the daemon refuses is bad input
// (exit 2), a daemon that cannot be reached or fails is operational (3).
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w; is the daemon running (standby up), and is --server right?", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return apiError(method, path, resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: bad answer from the daemon: %w", method, path, err)
	}
	return nil
}

func apiError(method, path string, resp *http.Response) error {
	var eb api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &eb) != nil || eb.Error.Message == "" {
		eb.Error = api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("%s %s: %s", method, path, resp.Status)}
	}
	err := fmt.Errorf("%w", &eb.Error)
	if resp.StatusCode == http.StatusUnauthorized {
		err = fmt.Errorf("%w; set STANDBY_TOKEN to a token the daemon knows", &eb.Error)
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return badInput(err)
	}
	return err
}

// events reads a job's stored events after a sequence number.
func (c *apiClient) events(ctx context.Context, id string, after int64) ([]api.Event, error) {
	var list api.EventList
	err := c.do(ctx, "GET", fmt.Sprintf("/v1/jobs/%s/events?after=%d", url.PathEscape(id), after), nil, &list)
	return list.Events, err
}

func printEvent(w io.Writer, ev api.Event) {
	who := "job"
	if ev.Step != "" {
		who = ev.Step
	}
	fmt.Fprintf(w, "%s  %-10s %-10s %s\n", ev.Time.Local().Format(time.TimeOnly), who, ev.Status, ev.Message)
}

// follow prints a job's events after a sequence number from its event
// stream until the job is finished or waits for an operator.
func (c *apiClient) follow(ctx context.Context, id string, after int64, w io.Writer) error {
	path := fmt.Sprintf("/v1/jobs/%s/events?after=%d", url.PathEscape(id), after)
	req, err := c.request(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("follow job %s: %w; is the daemon running?", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return apiError("GET", path, resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev api.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("follow job %s: bad event from the daemon: %w", id, err)
		}
		printEvent(w, ev)
		if ev.Kind == api.EventJob && (ev.Status.Finished() || ev.Status == api.StatusWaiting) {
			return nil
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("follow job %s: %w", id, err)
	}
	return nil
}
