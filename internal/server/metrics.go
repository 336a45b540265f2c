package server

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/standby-dr/standby/internal/api"
)

// metrics are the daemon's Prometheus series, on a registry of their own.
type metrics struct {
	jobs        Jobs
	reg         *prometheus.Registry
	jobDuration *prometheus.HistogramVec
	jobsDone    *prometheus.CounterVec
	steps       *prometheus.CounterVec
	rpo         *prometheus.GaugeVec
	shipped     *prometheus.CounterVec
}

func newMetrics(jobs Jobs) *metrics {
	m := &metrics{
		jobs: jobs,
		reg:  prometheus.NewRegistry(),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "standby_job_duration_seconds",
			Help:    "Time from a job's start to its end, by operation and final status.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200},
		}, []string{"operation", "status"}),
		jobsDone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "standby_jobs_finished_total",
			Help: "Jobs that finished, by operation and status.",
		}, []string{"operation", "status"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "standby_job_steps_total",
			Help: "Step transitions of jobs, by the status a step entered.",
		}, []string{"status"}),
		rpo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "standby_rpo_seconds",
			Help: "Age of the newest committed recovery point of a protected VM.",
		}, []string{"vm"}),
		shipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "standby_shipped_bytes_total",
			Help: "Bytes shipped to the recovery site, by VM.",
		}, []string{"vm"}),
	}
	m.reg.MustRegister(m.jobDuration, m.jobsDone, m.steps, m.rpo, m.shipped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// observe counts transitions; a job's end reads the job for its duration.
func (m *metrics) observe(ev api.Event) {
	switch {
	case ev.Kind == api.EventStep:
		m.steps.WithLabelValues(string(ev.Status)).Inc()
	case ev.Kind == api.EventJob && ev.Status.Finished():
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		j, err := m.jobs.Job(ctx, ev.Job)
		if err != nil {
			return // the series misses one sample; the job itself is recorded
		}
		m.jobsDone.WithLabelValues(j.Operation, string(ev.Status)).Inc()
		if !j.Started.IsZero() && !j.Finished.IsZero() {
			m.jobDuration.WithLabelValues(j.Operation, string(ev.Status)).Observe(j.Finished.Sub(j.Started).Seconds())
		}
	}
}

// SetRPO records the RPO of a VM now, for standby_rpo_seconds.
func (s *Server) SetRPO(vm string, rpo time.Duration) {
	s.metrics.rpo.WithLabelValues(vm).Set(rpo.Seconds())
}

// AddShipped counts bytes shipped for a VM.
func (s *Server) AddShipped(vm string, n int64) {
	s.metrics.shipped.WithLabelValues(vm).Add(float64(n))
}
