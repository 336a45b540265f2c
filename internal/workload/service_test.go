package workload

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

func TestServiceHTTP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.img")
	l, err := OpenLedger(path, LedgerOptions{Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	svc := NewService(l, 500, clock.Real{})
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()

	get := func(p string) (*http.Response, Report) {
		t.Helper()
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r Report
		if p == "/records" {
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				t.Fatal(err)
			}
		}
		return resp, r
	}
	if resp, _ := get("/health"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health before running: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().LastSeq < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if resp, _ := get("/health"); resp.StatusCode != http.StatusOK {
		t.Fatalf("health while running: %d", resp.StatusCode)
	}
	_, r := get("/records")
	if r.Count < 20 || r.FirstSeq != 1 || r.LastSeq != r.Count || !r.Running || r.Rate != 500 || r.Recovered.Count != 0 {
		t.Fatalf("records: %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if resp, _ := get("/health"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health after stop: %d", resp.StatusCode)
	}
	n := l.Stats().LastSeq
	l.Close()

	l2, err := OpenLedger(path, LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	_, r = func() (*http.Response, Report) {
		srv2 := httptest.NewServer(NewService(l2, 50, nil).Handler())
		defer srv2.Close()
		resp, err := http.Get(srv2.URL + "/records")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r Report
		json.NewDecoder(resp.Body).Decode(&r)
		return resp, r
	}()
	if r.Recovered.Count != n || r.Recovered.LastSeq != n || r.TornSkipped != 0 {
		t.Fatalf("after restart: %+v, want %d recovered", r, n)
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		bad  bool
	}{
		{"50/s", 50, false}, {"50", 50, false}, {"120/m", 2, false}, {"3600/h", 1, false},
		{"0.5/s", 0.5, false}, {"0/s", 0, true}, {"-1", 0, true}, {"5/d", 0, true}, {"fast", 0, true}, {"1e9/s", 0, true},
	} {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestResolveListenAndDisk(t *testing.T) {
	env := map[string]string{"STANDBY_IP_0": "127.4.5.6", "STANDBY_DISK_DATA": "/disks/data", "STANDBY_DISK_LOG_2": "/disks/l"}
	getenv := func(k string) string { return env[k] }
	none := func(string) string { return "" }
	for _, tc := range []struct {
		in, want string
		getenv   func(string) string
	}{
		{":8080", "127.4.5.6:8080", getenv}, {":8080", "127.0.0.1:8080", none}, {"10.0.0.1:80", "10.0.0.1:80", getenv},
	} {
		got, err := ResolveListen(tc.in, tc.getenv)
		if err != nil || got != tc.want {
			t.Errorf("ResolveListen(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := ResolveListen("8080", getenv); err == nil {
		t.Error("ResolveListen(8080): want an error")
	}
	if p, err := DiskPath("data", getenv); err != nil || p != "/disks/data" {
		t.Errorf("DiskPath(data) = %q, %v", p, err)
	}
	if p, err := DiskPath("log-2", getenv); err != nil || p != "/disks/l" {
		t.Errorf("DiskPath(log-2) = %q, %v", p, err)
	}
	if _, err := DiskPath("os", getenv); err == nil {
		t.Error("DiskPath(os): want an error")
	}
}
