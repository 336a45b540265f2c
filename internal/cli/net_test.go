package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/spec"
)

// run runs the command line and returns exit code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCtx(context.Background(), args...)
}

// runCtx runs the command line until it ends or ctx does.
func runCtx(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(ctx, args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

const twoCircuits = "../../examples/hub-spoke-two-circuits.yaml"

func TestNetCheckExample(t *testing.T) {
	code, out, stderr := run(t, "net", "check", "-f", twoCircuits, "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d; stderr %s; out %s", code, stderr, out)
	}
	var res struct {
		Findings []struct{ Rule, Severity, Scope, Resource, Message, Hint string } `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, f := range res.Findings {
		if f.Severity == "error" {
			t.Errorf("error finding on the two-circuit example: %+v", f)
		}
	}
	code, out, _ = run(t, "net", "check", "-f", twoCircuits)
	if code != ExitOK || !strings.Contains(out, "contoso-eastasia") {
		t.Errorf("text output (exit %d):\n%s", code, out)
	}
}

func TestNetPlanJSON(t *testing.T) {
	code, out, stderr := run(t, "net", "plan", "-f", "../../examples/single-circuit-same-ip.yaml", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"topology", "mapping", "target", "runbook"} {
		if _, ok := res[k]; !ok {
			t.Errorf("plan JSON lacks %q", k)
		}
	}
	var rb []struct {
		ID, Phase, Action, Resource string
		DependsOn                   []string
	}
	if err := json.Unmarshal(res["runbook"], &rb); err != nil || len(rb) == 0 {
		t.Fatalf("runbook: %v", err)
	}
}

func TestNetTraceExitCodes(t *testing.T) {
	code, out, _ := run(t, "net", "trace", "-f", twoCircuits, "--from", "hq/client", "--to", "10.1.0.4")
	if code != ExitOK || !strings.Contains(out, "er-hongkong") || !strings.Contains(out, "DELIVERED") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	code, out, _ = run(t, "net", "trace", "-f", twoCircuits, "--from", "hq/client", "--to", "172.30.1.4", "--state", "test", "-o", "json")
	if code != ExitFailure {
		t.Errorf("a dropped trace exits 1, got %d", code)
	}
	var tr struct{ Result, Reason string }
	if err := json.Unmarshal([]byte(out), &tr); err != nil || tr.Result != "dropped" {
		t.Errorf("trace JSON %v: %s", err, out)
	}
	for _, args := range [][]string{
		{"net", "trace", "-f", twoCircuits, "--from", "hq/client", "--to", "10.1.0.999"},
		{"net", "trace", "-f", twoCircuits, "--from", "hq/client", "--to", "10.1.0.4", "--state", "sideways"},
		{"net", "trace", "-f", twoCircuits, "--from", "nobody/none", "--to", "10.1.0.4"},
		{"net", "check"},
		{"net", "check", "-f", twoCircuits, "-o", "yaml"},
		{"net", "check", "-f", twoCircuits, "--bogus"},
		{"net", "frobnicate"},
	} {
		if code, _, stderr := run(t, args...); code != ExitBadInput || stderr == "" {
			t.Errorf("%v: exit %d, want 2 with a message; stderr %q", args, code, stderr)
		}
	}
}

func TestBadSpecExitsTwo(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(twoCircuits)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(data), "10.1.0.0/24", "10.1.0.1/24", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"net", "check"}, {"net", "plan"}, {"net", "trace", "--from", "hq/client", "--to", "10.1.0.4"}} {
		code, _, stderr := run(t, append(cmd, "-f", bad)...)
		if code != ExitBadInput || !strings.Contains(stderr, "bad.yaml:") || !strings.Contains(stderr, "host bits") {
			t.Errorf("%v: exit %d, stderr %q", cmd, code, stderr)
		}
	}
	code, _, stderr := run(t, "net", "check", "-f", bad, "-o", "json")
	var e struct {
		Problems []struct {
			File string
			Line int
			Path string
		}
	}
	if code != ExitBadInput || json.Unmarshal([]byte(stderr), &e) != nil || len(e.Problems) == 0 || e.Problems[0].Line == 0 {
		t.Errorf("JSON error: exit %d %s", code, stderr)
	}
}

// The demo tells the whole story on the local provider: protection, a
// drill with nothing left behind, an unplanned failover whose loss is
// measured by the ledgers, and a failback that loses nothing.
func TestDemo(t *testing.T) {
	bin := standbyBinary(t)
	code, out, stderr := run(t, "demo", "--executable", bin, "--every", "1s", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res DemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("demo JSON: %v\n%s", err, out)
	}
	if len(res.Traces) != 2 || res.Drill == nil || res.Failover == nil || res.Failback == nil {
		t.Fatalf("demo result incomplete: %s", out)
	}
	if res.Leftovers != 0 {
		t.Errorf("the drill left %d resources", res.Leftovers)
	}
	// As root with FUSE (and always in CI), recovered machines boot from
	// served overlays, not from copies.
	if (os.Geteuid() == 0 || os.Getenv("STANDBY_TEST_REQUIRE_ALL") == "1") && res.Disks != "served" {
		t.Errorf("recovered machines booted from %q disks, want served overlays", res.Disks)
	}
	if res.Failover.RTO <= 0 || res.Failback.RTO <= 0 {
		t.Errorf("RTO not measured: failover %v failback %v", res.Failover.RTO, res.Failback.RTO)
	}
	if len(res.Ledgers) != 2 {
		t.Fatalf("ledgers: %+v", res.Ledgers)
	}
	for _, l := range res.Ledgers {
		if l.RecoveredAfterFO == 0 || l.RecoveredAfterFO > l.WrittenAtKill {
			t.Errorf("%s: recovered %d of %d after failover", l.VM, l.RecoveredAfterFO, l.WrittenAtKill)
		}
		// An unplanned failover loses no more than the RPO at the kill:
		// every lost record was written within it (and 100 ms for a
		// write's own time).
		if l.LostInFailover > 0 && (l.RPOAtKill <= 0 || l.LostSpan > l.RPOAtKill+100*time.Millisecond) {
			t.Errorf("%s lost records written %s before the kill; the RPO then was %s", l.VM, l.LostSpan, l.RPOAtKill)
		}
		if l.LostInFailback != 0 {
			t.Errorf("%s lost %d records in the planned failback", l.VM, l.LostInFailback)
		}
	}
}

// The same story on real namespaces: the probes go through the target
// circuit after failover and the source circuit after failback, and the
// lab is gone afterwards.
func TestDemoLab(t *testing.T) {
	needLabRoot(t)
	bin := standbyBinary(t)
	code, out, stderr := run(t, "demo", "--lab", "--executable", bin, "--every", "1s", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res DemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.RealPaths) != 2 {
		t.Fatalf("want the real paths after failover and failback: %+v", res.RealPaths)
	}
	if !slices.Contains(res.RealPaths[0].Nodes(), "er-singapore") || !slices.Contains(res.RealPaths[1].Nodes(), "er-hongkong") {
		t.Errorf("paths: after failover %v, after failback %v", res.RealPaths[0].Nodes(), res.RealPaths[1].Nodes())
	}
	for _, l := range res.Ledgers {
		// An unplanned failover loses no more than the RPO at the kill:
		// every lost record was written within it (and 100 ms for a
		// write's own time).
		if l.LostInFailover > 0 && (l.RPOAtKill <= 0 || l.LostSpan > l.RPOAtKill+100*time.Millisecond) {
			t.Errorf("%s lost records written %s before the kill; the RPO then was %s", l.VM, l.LostSpan, l.RPOAtKill)
		}
		if l.LostInFailback != 0 {
			t.Errorf("%s lost %d records in the failback", l.VM, l.LostInFailback)
		}
	}
	// Other tests may run labs at the same time: look for this demo's.
	prefix := netlab.Prefix(daemon.LabName(&spec.Spec{Name: "contoso-quickstart"}, filepath.Join(res.Dir, "standby")))
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), prefix) {
		t.Errorf("the demo left namespaces %s*:\n%s", prefix, out)
	}
}
