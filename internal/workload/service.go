package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

// Service appends to a ledger at a steady rate and serves its state over
// HTTP: /health answers 200 once the ledger is recovered and appending, and
// /records reports the counts.
type Service struct {
	l    *Ledger
	rate float64
	clk  clock.Clock

	mu      sync.Mutex
	running bool
	err     error
}

// NewService returns a service appending rate records a second to l.
func NewService(l *Ledger, rate float64, clk clock.Clock) *Service {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Service{l: l, rate: rate, clk: clk}
}

// Run appends until ctx is done (then it returns nil) or a write fails.
// Records are written in batches of what has fallen due since the last
// tick, each batch synced before it counts; a stall is not made up for by
// more than one batch.
func (s *Service) Run(ctx context.Context) error {
	if s.rate <= 0 {
		return errors.New("ledger: rate must be above zero")
	}
	period := max(time.Duration(float64(time.Second)/s.rate), 2*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	start := s.clk.Now()
	var done int64
	s.setState(true, nil)
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		due := int64(s.clk.Since(start).Seconds()*s.rate) - done
		if due > MaxBatch {
			done += due - MaxBatch
			due = MaxBatch
		}
		if due <= 0 {
			continue
		}
		if err := s.l.Append(ctx, int(due)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.setState(false, err)
			return err
		}
		done += due
	}
}

func (s *Service) setState(running bool, err error) {
	s.mu.Lock()
	s.running, s.err = running, err
	s.mu.Unlock()
}

// Report is the body of /records.
type Report struct {
	Ledger   string    `json:"ledger"`
	Disk     string    `json:"disk"`
	Count    uint64    `json:"count"`
	FirstSeq uint64    `json:"firstSeq"`
	LastSeq  uint64    `json:"lastSeq"`
	LastTime time.Time `json:"lastTime,omitzero"`
	// TornSkipped is what recovery skipped at start.
	TornSkipped int     `json:"tornSkipped"`
	Capacity    uint64  `json:"capacity"`
	Rate        float64 `json:"rate"`
	Running     bool    `json:"running"`
	Error       string  `json:"error,omitempty"`
	// Recovered is what the disk held at start: after a failover, the
	// records the recovery point held.
	Recovered Recovery `json:"recovered"`
}

// Report returns the state of the service now.
func (s *Service) Report() Report {
	st := s.l.Stats()
	rec := s.l.Recovery()
	r := Report{
		Ledger: rec.Ledger, Disk: rec.Disk,
		Count: st.Count, FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, LastTime: st.LastTime,
		TornSkipped: rec.TornSkipped, Capacity: rec.Capacity, Rate: s.rate, Recovered: rec,
	}
	s.mu.Lock()
	r.Running = s.running
	if s.err != nil {
		r.Error = s.err.Error()
	}
	s.mu.Unlock()
	return r
}

// Handler serves /health and /records.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		rep := s.Report()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch {
		case rep.Error != "":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "failed: %s\n", rep.Error)
		case !rep.Running:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not running")
		default:
			fmt.Fprintf(w, "ok %d\n", rep.LastSeq)
		}
	})
	mux.HandleFunc("GET /records", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Report())
	})
	return mux
}

// ParseRate reads a rate such as 50/s, 300/m, 2/h or a bare 50 (a second).
func ParseRate(s string) (float64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	div := 1.0
	switch unit {
	case "", "s":
	case "m":
		div = 60
	case "h":
		div = 3600
	default:
		return 0, fmt.Errorf("rate %q: want records per s, m or h, such as 50/s", s)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 || n/div > 100000 {
		return 0, fmt.Errorf("rate %q: want a number above zero and at most 100000/s, such as 50/s", s)
	}
	return n / div, nil
}

// ResolveListen turns a listen address whose host is empty (":8080") into
// one on the machine's first address, STANDBY_IP_0, or 127.0.0.1 when that
// is unset.
func ResolveListen(addr string, getenv func(string) string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w (write host:port or :port)", addr, err)
	}
	if host == "" {
		host = getenv("STANDBY_IP_0")
		if host == "" {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// DiskEnv names the variable that holds the path of the disk called name:
// STANDBY_DISK_ and the name in capitals, other characters as underscores.
func DiskEnv(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return "STANDBY_DISK_" + string(b)
}

// DiskPath finds the path of the disk called name in the environment.
func DiskPath(name string, getenv func(string) string) (string, error) {
	v := DiskEnv(name)
	p := getenv(v)
	if p == "" {
		return "", fmt.Errorf("disk %q: %s is not set; run the ledger as a machine's boot command, or give --disk-path", name, v)
	}
	return p, nil
}
