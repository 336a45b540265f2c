package server

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/recovery"
)

// Jobs is what the server needs of the recovery driver.
type Jobs interface {
	Jobs(ctx context.Context, f recovery.JobFilter) ([]recovery.Job, error)
	Job(ctx context.Context, id string) (recovery.Job, error)
	// Start applies req and lets the job run on in the background.
	Start(ctx context.Context, id string, req api.ResumeRequest) (recovery.Job, error)
	Events(ctx context.Context, id string, after int64) ([]api.Event, error)
	Subscribe(job string) (<-chan api.Event, func())
	Observe(fn func(api.Event))
}

// Config is what a Server is built from.
type Config struct {
	Jobs Jobs
	// Ops, when set, serves the plans' operations and replication status.
	Ops Operations
	// Tokens that may call the API. With none, every call but /healthz
	// and the OpenAPI description is refused.
	Tokens []Token
	// Clock dates the dashboard's pages and its sessions; default the
	// real one.
	Clock clock.Clock
}

// Server is the HTTP API and the dashboard. It is an http.Handler.
type Server struct {
	jobs Jobs
	ops  Operations

	shippedMu   sync.Mutex
	shippedSeen map[string]int64 // bytes shipped per VM already counted
	tokens      []Token
	mux         *http.ServeMux
	metrics     *metrics
	clock       clock.Clock
	pages       map[string]*template.Template // the dashboard's
	sessions    sessions                      // the dashboard's sign-ins
}

//go:embed openapi.yaml
var openAPI []byte

// maxBody bounds a request body.
const maxBody = 1 << 20

// New builds the server and registers its metrics observer with the jobs.
func New(cfg Config) (*Server, error) {
	if cfg.Jobs == nil {
		return nil, errors.New("server: no jobs to serve")
	}
	s := &Server{jobs: cfg.Jobs, ops: cfg.Ops, tokens: cfg.Tokens, mux: http.NewServeMux(), clock: cfg.Clock}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	s.metrics = newMetrics(cfg.Jobs)
	cfg.Jobs.Observe(s.metrics.observe)

	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openAPI)
	})
	s.mux.Handle("GET /metrics", s.require(RoleReader, func(w http.ResponseWriter, r *http.Request) {
		s.refreshReplication(r.Context())
		s.metrics.handler().ServeHTTP(w, r)
	}))
	s.mux.HandleFunc("GET /v1/jobs", s.require(RoleReader, s.listJobs))
	s.mux.HandleFunc("GET /v1/jobs/{id}", s.require(RoleReader, s.getJob))
	s.mux.HandleFunc("GET /v1/jobs/{id}/events", s.require(RoleReader, s.jobEvents))
	s.mux.HandleFunc("POST /v1/jobs/{id}/resume", s.require(RoleOperator, s.resumeJob))
	s.routeOperations()
	if err := s.routeUI(); err != nil {
		return nil, err
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path, "see /v1/openapi.yaml")
	})
	return s, nil
}

// ServeHTTP serves the API and the dashboard.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := recovery.JobFilter{Operation: q.Get("operation"), Plan: q.Get("plan")}
	for _, st := range q["status"] {
		for _, v := range strings.Split(st, ",") {
			f.Status = append(f.Status, api.Status(v))
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("limit %q: want a number of jobs", l), "")
			return
		}
		f.Limit = n
	}
	js, err := s.jobs.Jobs(r.Context(), f)
	if err != nil {
		writeErr(w, err)
		return
	}
	out := api.JobList{Jobs: []api.Job{}}
	for _, j := range js {
		out.Jobs = append(out.Jobs, j.API())
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.jobs.Job(r.Context(), r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, j.API())
}

func (s *Server) resumeJob(w http.ResponseWriter, r *http.Request) {
	var req api.ResumeRequest
	if r.ContentLength != 0 {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "resume: bad body: "+err.Error(), `send {"ack":true}, {"retry":true}, {"abort":true} or nothing`)
			return
		}
	}
	j, err := s.jobs.Start(r.Context(), r.PathValue("id"), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, j.API())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing to tell it
}

func writeError(w http.ResponseWriter, status int, code, msg, hint string) {
	writeJSON(w, status, api.ErrorBody{Error: api.Error{Code: code, Message: msg, Hint: hint}})
}

// writeErr maps recovery's error kinds to statuses.
func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, recovery.ErrNotFound):
		writeError(w, http.StatusNotFound, api.CodeNotFound, err.Error(), "list jobs with GET /v1/jobs")
	case errors.Is(err, recovery.ErrInvalid):
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error(), "")
	case errors.Is(err, recovery.ErrConflict):
		writeError(w, http.StatusConflict, api.CodeConflict, err.Error(), "")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, api.CodeUnavailable, err.Error(), "retry")
	default:
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), "")
	}
}
