package cli

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/local"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The daemon over its API: status, refusals that change nothing, a planned
// failover that loses no record, commit, reprotect, failback.
func TestUpAndOperate(t *testing.T) {
	bin := standbyBinary(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	server := "http://" + addr
	t.Setenv("STANDBY_DIR", filepath.Join(dir, "state"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		code, _, _ := runCtx(ctx, "up", "-f", "../../examples/local-quickstart.yaml", "--dir", filepath.Join(dir, "state"), "--listen", addr, "--executable", bin)
		done <- code
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("the daemon did not stop")
		}
		stopMachines(t, filepath.Join(dir, "state"))
	}()
	var st api.StatusReport
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, out, _ := run(t, "status", "--server", server, "-o", "json")
		if code == ExitOK && json.Unmarshal([]byte(out), &st) == nil && len(st.VMs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not come up: %d %s", code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, v := range st.VMs {
		if v.State != "protected" || v.LastPoint == 0 {
			t.Errorf("%s: %+v", v.VM, v)
		}
	}
	if m := metricsOf(t, server); !strings.Contains(m, `standby_rpo_seconds{vm="app1"}`) || !strings.Contains(m, `standby_shipped_bytes_total{vm="app2"}`) {
		t.Errorf("/metrics lacks the RPO and shipped bytes per VM:\n%s", m)
	}
	// Refusals: exit 2, nothing changed.
	for _, args := range [][]string{{"commit", "contoso-app"}, {"reprotect", "contoso-app"}, {"failback", "contoso-app"}, {"failover", "no-such-plan"}, {"drill", "cleanup", "contoso-app"}} {
		if code, _, stderr := run(t, append(args, "--server", server)...); code != ExitBadInput || stderr == "" {
			t.Errorf("%v: exit %d %q, want 2 with a reason", args, code, stderr)
		}
	}
	var jl api.JobList
	if code, out, _ := run(t, "jobs", "--server", server, "-o", "json"); code != ExitOK || json.Unmarshal([]byte(out), &jl) != nil {
		t.Fatalf("jobs: %s", out)
	}
	for _, j := range jl.Jobs {
		if j.Operation != "provision" {
			t.Errorf("a refused operation made a job: %+v", j)
		} else if j.Status != api.StatusSucceeded {
			t.Errorf("the target network was not provisioned ahead: %+v", j)
		}
	}
	if len(jl.Jobs) != 1 {
		t.Errorf("want the provision job alone, got %d jobs", len(jl.Jobs))
	}

	// A planned failover: the source stops, a final point ships, nothing is lost.
	code, out, stderr := run(t, "failover", "contoso-app", "--planned", "--server", server, "-o", "json")
	if code != ExitOK {
		t.Fatalf("failover: exit %d %s %s", code, stderr, out)
	}
	var j api.Job
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatal(err)
	}
	for j.Status == api.StatusWaiting {
		code, out, stderr = run(t, "jobs", "resume", j.ID, "--ack", "--server", server, "-o", "json")
		if code != ExitOK || json.Unmarshal([]byte(out), &j) != nil {
			t.Fatalf("resume: %d %s %s", code, out, stderr)
		}
	}
	if j.Status != api.StatusSucceeded {
		t.Fatalf("failover %s: %s", j.Status, out)
	}
	var rep struct {
		Machines []struct {
			VM         string
			DataLossNs int64 `json:"dataLossNanos"`
			Records    *struct {
				AtSource, Recovered, Lost uint64
			} `json:"records"`
		}
		RTO int64 `json:"rtoNanos"`
	}
	if err := json.Unmarshal(j.Report, &rep); err != nil || len(rep.Machines) != 2 || rep.RTO <= 0 {
		t.Fatalf("report %s", j.Report)
	}
	for _, m := range rep.Machines {
		if m.DataLossNs != 0 {
			t.Errorf("a planned failover lost data on %s: %d ns", m.VM, m.DataLossNs)
		}
		// The ledgers' own count agrees: nothing lost.
		if r := m.Records; r == nil || r.Lost != 0 || r.Recovered != r.AtSource {
			t.Errorf("%s: the ledger's count in the report: %+v, want every record recovered", m.VM, r)
		}
	}
	if code, _, _ := run(t, "failover", "contoso-app", "--server", server); code != ExitBadInput {
		t.Errorf("a second failover while failed over: exit %d, want 2", code)
	}
	for _, op := range []string{"commit", "reprotect"} {
		if code, out, stderr := run(t, op, "contoso-app", "--server", server); code != ExitOK {
			t.Fatalf("%s: exit %d %s %s", op, code, out, stderr)
		}
	}
	code, out, stderr = run(t, "failback", "contoso-app", "--server", server, "-o", "json")
	if code != ExitOK || json.Unmarshal([]byte(out), &j) != nil {
		t.Fatalf("failback: %d %s %s", code, out, stderr)
	}
	for j.Status == api.StatusWaiting {
		code, out, _ = run(t, "jobs", "resume", j.ID, "--ack", "--server", server, "-o", "json")
		if code != ExitOK || json.Unmarshal([]byte(out), &j) != nil {
			t.Fatalf("resume: %d %s", code, out)
		}
	}
	if j.Status != api.StatusSucceeded {
		t.Fatalf("failback %s: %s", j.Status, out)
	}
	code, out, _ = run(t, "status", "--server", server, "-o", "json")
	if code != ExitOK || json.Unmarshal([]byte(out), &st) != nil || st.Plans["contoso-app"] != "protected" {
		t.Errorf("after failback: %s", out)
	}
}

// stopMachines stops what a daemon left running in its directory: its
// machines outlive it by design.
func stopMachines(t *testing.T, dir string) {
	t.Helper()
	lp, err := local.New(local.Options{Dir: filepath.Join(dir, "sites"), StopGrace: 2 * time.Second})
	if err != nil {
		t.Errorf("open the daemon's sites: %v", err)
		return
	}
	defer lp.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	items, err := lp.List(ctx, provider.Filter{Kind: provider.KindVM})
	if err != nil {
		t.Error(err)
		return
	}
	for _, it := range items {
		if err := lp.StopVM(ctx, it.Site, it.Name); err != nil {
			t.Error(err)
		}
	}
}

// metricsOf reads the daemon's /metrics with the admin token.
func metricsOf(t *testing.T, server string) string {
	t.Helper()
	c := newAPIClient(server)
	req, err := c.request(context.Background(), "GET", "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
