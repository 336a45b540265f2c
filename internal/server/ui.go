package server

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/recovery"
)

// The dashboard: read-only HTML pages of replication and jobs, rendered on
// the server with html/template from embedded files, so that it works
// offline and needs nothing but the daemon. The only script keeps a page
// current (ui/static/ui.js); every page reads well without it.

//go:embed ui/*.html ui/static
var uiFiles embed.FS

// pageNames are the templates of ui/, each laid out by ui/layout.html.
var pageNames = []string{"overview", "vm", "job", "login", "error"}

// page is what the layout needs around a page's own data.
type page struct {
	Title  string
	Viewer viewer
	Now    stamp
	// Refresh, in seconds, reloads the page's content in place.
	Refresh int
	// Events is an event stream whose every event reloads the content.
	Events string
	Data   any
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.ParseFS(uiFiles, "ui/layout.html")
	if err != nil {
		return nil, fmt.Errorf("server: dashboard layout: %w", err)
	}
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(uiFiles, "ui/"+name+".html")
		}
		if err != nil {
			return nil, fmt.Errorf("server: dashboard page %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

func (s *Server) routeUI() error {
	pages, err := parsePages()
	if err != nil {
		return err
	}
	s.pages = pages
	static, err := fs.Sub(uiFiles, "ui/static")
	if err != nil {
		return err
	}
	files := http.StripPrefix("/ui/static/", http.FileServerFS(static))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	s.mux.HandleFunc("GET /ui/static/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") { // no listings
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=300")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
	s.mux.HandleFunc("GET /ui/login", s.loginForm)
	s.mux.HandleFunc("POST /ui/login", s.login)
	s.mux.HandleFunc("POST /ui/logout", s.logout)
	s.mux.HandleFunc("GET /ui/{$}", s.requireUI(s.overviewPage))
	s.mux.HandleFunc("GET /ui/vms/{vm}", s.requireUI(s.vmPage))
	s.mux.HandleFunc("GET /ui/jobs/{id}", s.requireUI(s.jobPage))
	// The job page follows its job through the API's event stream, here
	// behind the dashboard's sign-in.
	s.mux.HandleFunc("GET /ui/jobs/{id}/events", s.requireUI(func(w http.ResponseWriter, r *http.Request, _ viewer) {
		s.jobEvents(w, r)
	}))
	s.mux.HandleFunc("GET /ui/", s.requireUI(func(w http.ResponseWriter, r *http.Request, _ viewer) {
		s.renderError(w, r, http.StatusNotFound, "There is no page "+r.URL.Path+".", "The overview links to every VM and job.")
	}))
	return nil
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request, v viewer) {
	ctx := r.Context()
	now := s.clock.Now()
	var (
		st       *api.StatusReport
		stErr    error
		last     = map[string]api.Point{}
		planJobs = map[string]recovery.Job{}
	)
	if s.ops != nil {
		rep, err := s.ops.Status(ctx)
		if err != nil {
			stErr = err
		} else {
			st = &rep
			for _, vm := range rep.VMs {
				if vm.LastPoint == 0 {
					continue
				}
				// Only for the last point's kind: a VM whose points cannot
				// be read shows the rest of its row.
				if ps, err := s.ops.Points(ctx, vm.VM); err == nil {
					if p, ok := pointBySeq(ps, vm.LastPoint); ok {
						last[vm.VM] = p
					}
				}
			}
			for plan := range rep.Plans {
				if js, err := s.jobs.Jobs(ctx, recovery.JobFilter{Plan: plan, Limit: 1}); err == nil && len(js) > 0 && js[0].Plan == plan {
					planJobs[plan] = js[0]
				}
			}
		}
	}
	jobs, jobsErr := s.jobs.Jobs(ctx, recovery.JobFilter{Limit: recentJobs})
	view := buildOverview(st, last, planJobs, jobs, now)
	view.Replication = s.ops != nil
	if stErr != nil {
		view.StatusErr = stErr.Error()
	}
	if jobsErr != nil {
		view.JobsErr = jobsErr.Error()
	}
	s.render(w, http.StatusOK, "overview", page{Title: "Overview", Viewer: v, Refresh: 5, Data: view})
}

func (s *Server) vmPage(w http.ResponseWriter, r *http.Request, v viewer) {
	name := r.PathValue("vm")
	if s.ops == nil {
		s.renderError(w, r, http.StatusNotFound, "This server does not serve replication, so it knows no VM.", "")
		return
	}
	points, err := s.ops.Points(r.Context(), name)
	if err != nil {
		s.renderErr(w, r, err)
		return
	}
	var st *api.VMStatus
	if rep, err := s.ops.Status(r.Context()); err == nil {
		for i := range rep.VMs {
			if rep.VMs[i].VM == name {
				st = &rep.VMs[i]
			}
		}
	}
	view := buildVM(name, st, points, s.clock.Now())
	s.render(w, http.StatusOK, "vm", page{Title: "VM " + name, Viewer: v, Refresh: 10, Data: view})
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PathValue("id")
	j, err := s.jobs.Job(r.Context(), id)
	if err != nil {
		s.renderErr(w, r, err)
		return
	}
	events, err := s.jobs.Events(r.Context(), id, 0)
	if err != nil {
		events = nil // the report stands without its log
	}
	view := buildJob(j, events, s.clock.Now())
	p := page{Title: j.Operation + " " + j.Plan, Viewer: v, Data: view}
	if view.Live {
		p.Events = fmt.Sprintf("%s/events?after=%d", jobLink(id), view.LastSeq)
	}
	s.render(w, http.StatusOK, "job", p)
}

// render writes a page whole, or a plain error when its template fails,
// so that no half page goes out.
func (s *Server) render(w http.ResponseWriter, status int, name string, p page) {
	now := s.clock.Now()
	p.Now = newStamp(now, now)
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		http.Error(w, "dashboard: render the "+name+" page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	securePage(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the browser went away: nothing to tell it
}

// errorView is the data of the error page.
type errorView struct {
	Status  int
	Text    string
	Message string
	Hint    string
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, msg, hint string) {
	v, _ := s.uiViewer(r)
	s.render(w, status, "error", page{Title: http.StatusText(status), Viewer: v,
		Data: errorView{Status: status, Text: http.StatusText(status), Message: msg, Hint: hint}})
}

// renderErr maps recovery's error kinds to statuses, as writeErr does for
// the API.
func (s *Server) renderErr(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, recovery.ErrNotFound):
		s.renderError(w, r, http.StatusNotFound, err.Error(), "The overview lists the protected VMs and the recent jobs.")
	case errors.Is(err, recovery.ErrInvalid):
		s.renderError(w, r, http.StatusBadRequest, err.Error(), "")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		s.renderError(w, r, http.StatusServiceUnavailable, err.Error(), "Reload the page.")
	default:
		s.renderError(w, r, http.StatusInternalServerError, err.Error(), "")
	}
}
