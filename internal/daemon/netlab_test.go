package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/recovery"
	"github.com/standby-dr/standby/internal/spec"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("STANDBY_TEST_REQUIRE_ALL") == "1" {
		t.Fatal("this test builds network namespaces and needs root (STANDBY_TEST_REQUIRE_ALL=1)")
	}
	t.Skip("needs root to build network namespaces")
}

// runAcked runs a job to its end, acknowledging manual steps.
func runAcked(t *testing.T, ctx context.Context, d *daemon.Daemon, j recovery.Job, err error) recovery.Job {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Run(ctx, j)
	for err == nil && got.Status == api.StatusWaiting {
		got, err = d.Resume(ctx, got.ID, true)
	}
	if err != nil || got.Status != api.StatusSucceeded {
		for _, s := range got.Steps {
			if s.Status == api.StatusFailed {
				t.Logf("%s: %s", s.ID, s.Error)
			}
		}
		t.Fatalf("%s: %v %s", j.Operation, err, got.Status)
	}
	return got
}

func realPath(t *testing.T, ctx context.Context, lab *netlab.Provider, to string) []string {
	t.Helper()
	tr, err := lab.Trace(ctx, "hq/client", netip.MustParseAddr(to), netlab.TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Result != netplan.Delivered {
		t.Fatalf("hq/client to %s: %s (%s), hops %v", to, tr.Result, tr.Reason, tr.Nodes())
	}
	return tr.Nodes()
}

// The full story on real namespaces: after failover hq/client reaches both
// ledgers at their old IPs through the target circuit; after failback
// through the source circuit again. With one circuit the source connection
// goes before the target's is made (netlab refuses both at once, as Azure
// does), and the reverse on failback.
func TestFullStoryOnNetlab(t *testing.T) {
	needRoot(t)
	bin := standbyBinary(t)
	for _, c := range []struct {
		file          string
		before, after string
		singleCircuit bool
	}{
		{"../../examples/hub-spoke-two-circuits.yaml", "er-hongkong", "er-singapore", false},
		{"../../examples/single-circuit-same-ip.yaml", "er-hongkong", "er-hongkong", true},
	} {
		t.Run(c.file, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			s, err := spec.Load(c.file)
			if err != nil {
				t.Fatal(err)
			}
			for i := range s.Protection.VirtualMachines {
				for j := range s.Protection.VirtualMachines[i].Disks {
					s.Protection.VirtualMachines[i].Disks[j].Size = 4 << 20
				}
			}
			for i := range s.Recovery.Plans {
				for j := range s.Recovery.Plans[i].Groups {
					for k := range s.Recovery.Plans[i].Groups[j].Post {
						if ch := s.Recovery.Plans[i].Groups[j].Post[k].Check; ch != nil {
							ch.Timeout = spec.Duration{Duration: 20 * time.Second}
						}
					}
				}
			}
			dir := t.TempDir()
			d, err := daemon.Open(ctx, daemon.Options{Spec: s, Dir: dir, Executable: bin})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := d.Down(context.Background()); err != nil {
					t.Error(err)
				}
				d.Close()
			}()
			if err := d.StartSites(ctx); err != nil {
				t.Fatal(err)
			}
			for _, ip := range []string{"10.1.0.4", "10.2.0.4"} {
				wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := provider.WaitCheck(wctx, d.Sites, provider.Check{From: "hq/client", HTTP: fmt.Sprintf("http://%s:8080/health", ip)}, 100*time.Millisecond)
				wcancel()
				if err != nil {
					t.Fatalf("the ledger at %s does not answer hq/client: %v", ip, err)
				}
				if path := realPath(t, ctx, d.Lab(), ip); !slices.Contains(path, c.before) {
					t.Errorf("before failover %s goes %v, not through %s", ip, path, c.before)
				}
			}
			if err := d.Protect(ctx, nil); err != nil {
				t.Fatal(err)
			}
			pj, err := d.Provision(ctx)
			if err != nil || (pj.ID != "" && pj.Status != api.StatusSucceeded) {
				t.Fatalf("provision: %v %s", err, pj.Status)
			}
			if err := d.StopSource(ctx); err != nil {
				t.Fatal(err)
			}
			fj, err := d.Planner.Failover("contoso-app", recovery.FailoverOptions{})
			fo := runAcked(t, ctx, d, fj, err)
			for _, ip := range []string{"10.1.0.4", "10.2.0.4"} {
				path := realPath(t, ctx, d.Lab(), ip)
				if !slices.Contains(path, c.after) || !slices.Contains(path, "southeastasia/hub-nva-asr") {
					t.Errorf("after failover %s goes %v, want through %s and the target NVA", ip, path, c.after)
				}
			}
			if c.singleCircuit {
				del, create := fo.Step("delete-connection:eastasia/connections/hub-ergw-hongkong"), fo.Step("create-connection:southeastasia/connections/hub-ergw-asr-er-hongkong")
				if del == nil || create == nil || create.Started.Before(del.Finished) {
					t.Errorf("the source connection must be gone before the target's is made: %+v %+v", del, create)
				}
			}
			cj, err := d.Planner.Commit("contoso-app", fo.ID)
			runAcked(t, ctx, d, cj, err)
			rj, err := d.Planner.Reprotect("contoso-app")
			runAcked(t, ctx, d, rj, err)
			bj, err := d.Planner.Failback("contoso-app")
			fb := runAcked(t, ctx, d, bj, err)
			for _, ip := range []string{"10.1.0.4", "10.2.0.4"} {
				path := realPath(t, ctx, d.Lab(), ip)
				if !slices.Contains(path, c.before) || !slices.Contains(path, "eastasia/hub-nva") {
					t.Errorf("after failback %s goes %v, want through %s and the source NVA", ip, path, c.before)
				}
			}
			if c.singleCircuit {
				del, create := fb.Step("failback/delete-connection:southeastasia/connections/hub-ergw-asr-er-hongkong"), fb.Step("failback/create-connection:eastasia/connections/hub-ergw-hongkong")
				if del == nil || create == nil || create.Started.Before(del.Finished) {
					t.Errorf("failback must delete the target connection before reconnecting the source: %+v %+v", del, create)
				}
			}
		})
	}
}
