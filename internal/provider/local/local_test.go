package local_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/local"
	"github.com/standby-dr/standby/internal/provider/providertest"
)

func TestMain(m *testing.M) {
	providertest.ServeVMIfAsked()
	if os.Getenv(ledgerRole) != "" {
		os.Exit(runLedger())
	}
	os.Exit(m.Run())
}

func newLocal(t *testing.T, dir string, grace time.Duration) *local.Provider {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := local.New(local.Options{Dir: dir, Executable: exe, Lab: strconv.Itoa(rand.Int()), StopGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stopAll stops every machine left, so that a failing test leaks nothing.
func stopAll(p *local.Provider) {
	items, _ := p.List(context.Background(), provider.Filter{Kind: provider.KindVM})
	for _, it := range items {
		p.StopVM(context.Background(), it.Site, it.Name)
	}
}

func TestConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) provider.Provider {
		p := newLocal(t, t.TempDir(), 3*time.Second)
		t.Cleanup(func() { stopAll(p); p.Close() })
		return p
	})
}

func port() int { return 20000 + rand.IntN(20000) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitOK(t *testing.T, ctx context.Context, p provider.Provider, c provider.Check) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := provider.WaitCheck(cctx, p, c, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Two sites with the same IPs get different loopback addresses; a check is
// sent to the site where the address is active, as after a failover.
func TestSameIPAtTwoSites(t *testing.T) {
	ctx := ctxT(t)
	p := newLocal(t, t.TempDir(), 3*time.Second)
	defer func() { stopAll(p); p.Close() }()
	pt, pids := port(), t.TempDir()
	client := providertest.OnPremises()[0].Hosts[0]
	if err := p.CreateNetwork(ctx, "job", provider.Resource{Site: providertest.OnPrem, Host: &client}); err != nil {
		t.Fatal(err)
	}
	a := providertest.Machine(t, "site-a", "app1", "10.1.0.4", pt, pids, nil)
	b := providertest.Machine(t, "site-b", "app1", "10.1.0.4", pt, pids, nil)
	for _, vm := range []provider.VM{a, b} {
		if err := p.StartVM(ctx, "job", vm); err != nil {
			t.Fatal(err)
		}
	}
	items, err := p.List(ctx, provider.Filter{Kind: provider.KindVM})
	if err != nil || len(items) != 2 || items[0].Address == items[1].Address {
		t.Fatalf("machines: %+v, %v", items, err)
	}
	url := fmt.Sprintf("http://10.1.0.4:%d/whoami/", pt)
	waitOK(t, ctx, p, provider.Check{From: "site-a/app1", HTTP: url + "site-a"})
	waitOK(t, ctx, p, provider.Check{From: "site-b/app1", HTTP: url + "site-b"})

	// The machine sees its disk and its loopback address.
	env := fmt.Sprintf("http://%s:%d/env/", items[0].Address, pt)
	if got := get(t, env+"STANDBY_DISK_DATA"); got != a.Disks[0].Path {
		t.Errorf("STANDBY_DISK_DATA = %q, want %q", got, a.Disks[0].Path)
	}
	if got := get(t, env+"STANDBY_IP_0"); got != items[0].Address {
		t.Errorf("STANDBY_IP_0 = %q, want %q", got, items[0].Address)
	}
	if got := get(t, env+"STANDBY_SPEC_IP_0"); got != "10.1.0.4" {
		t.Errorf("STANDBY_SPEC_IP_0 = %q", got)
	}

	// From on-premises the address is ambiguous while both sides run...
	if _, err := p.Check(ctx, provider.Check{From: "hq/client", HTTP: url + "site-a"}); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("check with the address active at two sites: got %v, want ErrConflict", err)
	}
	// ...and reaches the recovery site once the source is down.
	if err := p.StopVM(ctx, "site-a", "app1"); err != nil {
		t.Fatal(err)
	}
	waitOK(t, ctx, p, provider.Check{From: "hq/client", HTTP: url + "site-b"})
	// Another machine with the same IP at the same site is refused.
	c := providertest.Machine(t, "site-b", "app2", "10.1.0.4", pt, pids, nil)
	if err := p.StartVM(ctx, "job", c); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("second machine on 10.1.0.4 at site-b: got %v, want ErrConflict", err)
	}
}

// List, and the machines, survive a restart of the provider.
func TestRestartAdoptsMachines(t *testing.T) {
	ctx := ctxT(t)
	dir, pt, pids := t.TempDir(), port(), t.TempDir()
	p := newLocal(t, dir, 3*time.Second)
	client := providertest.OnPremises()[0].Hosts[0]
	if err := p.CreateNetwork(ctx, "job", provider.Resource{Site: providertest.OnPrem, Host: &client}); err != nil {
		t.Fatal(err)
	}
	if err := p.StartVM(ctx, "job", providertest.Machine(t, "site-a", "app1", "10.1.0.4", pt, pids, nil)); err != nil {
		t.Fatal(err)
	}
	check := provider.Check{From: "hq/client", HTTP: fmt.Sprintf("http://10.1.0.4:%d/health", pt)}
	waitOK(t, ctx, p, check)
	before, _ := p.List(ctx, provider.Filter{})
	if _, err := local.New(local.Options{Dir: dir}); err == nil {
		t.Fatal("a second provider on the same directory was allowed")
	}
	p.Close()

	p2 := newLocal(t, dir, 3*time.Second)
	defer func() { stopAll(p2); p2.Close() }()
	after, _ := p2.List(ctx, provider.Filter{})
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("list changed across a restart:\n before %+v\n after  %+v", before, after)
	}
	waitOK(t, ctx, p2, check)
	if err := provider.Cleanup(ctx, p2, "job"); err != nil {
		t.Fatal(err)
	}
	if left := providertest.Alive(t, pids); len(left) != 0 {
		t.Fatalf("processes left: %v", left)
	}
	if items, _ := p2.List(ctx, provider.Filter{}); len(items) != 0 {
		t.Fatalf("left: %v", items)
	}
}

// A machine that ignores SIGTERM is killed after the grace period.
func TestStopEscalatesToKill(t *testing.T) {
	ctx := ctxT(t)
	p := newLocal(t, t.TempDir(), 300*time.Millisecond)
	defer func() { stopAll(p); p.Close() }()
	pt, pids := port(), t.TempDir()
	vm := providertest.Machine(t, "site-a", "stubborn", "10.1.0.4", pt, pids, map[string]string{"STANDBY_PROVIDERTEST_IGNORE_TERM": "1"})
	if err := p.StartVM(ctx, "job", vm); err != nil {
		t.Fatal(err)
	}
	waitOK(t, ctx, p, provider.Check{From: "site-a/stubborn", TCP: fmt.Sprintf("10.1.0.4:%d", pt)})
	start := time.Now()
	if err := p.StopVM(ctx, "site-a", "stubborn"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("stopped after %v, before the grace period", d)
	}
	if left := providertest.Alive(t, pids); len(left) != 0 {
		t.Fatalf("processes left: %v", left)
	}
}

// When a machine's main process dies, the rest of its group goes with it,
// and starting it again brings it back under its first job.
func TestMachineExitTakesGroup(t *testing.T) {
	ctx := ctxT(t)
	p := newLocal(t, t.TempDir(), 3*time.Second)
	defer func() { stopAll(p); p.Close() }()
	pt, pids := port(), t.TempDir()
	vm := providertest.Machine(t, "site-a", "app1", "10.1.0.4", pt, pids, nil)
	if err := p.StartVM(ctx, "job-1", vm); err != nil {
		t.Fatal(err)
	}
	check := provider.Check{From: "site-a/app1", TCP: fmt.Sprintf("10.1.0.4:%d", pt)}
	waitOK(t, ctx, p, check)
	alive := providertest.Alive(t, pids)
	if len(alive) != 2 {
		t.Fatalf("want 2 processes, found %v", alive)
	}
	// The machine records its main process first.
	if err := syscall.Kill(alive[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(providertest.Alive(t, pids)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if left := providertest.Alive(t, pids); len(left) != 0 {
		t.Fatalf("processes left after the main one died: %v", left)
	}
	var items []provider.Item
	for {
		items, _ = p.List(ctx, provider.Filter{Kind: provider.KindVM})
		if items[0].State == "exited" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if items[0].State != "exited" {
		t.Fatalf("machine state %q after its process died", items[0].State)
	}
	if err := p.StartVM(ctx, "job-2", vm); err != nil {
		t.Fatal(err)
	}
	items, _ = p.List(ctx, provider.Filter{Kind: provider.KindVM})
	if len(items) != 1 || items[0].State != "running" || items[0].Job != "job-1" {
		t.Fatalf("after restart: %+v", items)
	}
	waitOK(t, ctx, p, check)
}

// The word standby as a boot command runs the executable the provider was
// given.
func TestStandbyMeansExecutable(t *testing.T) {
	ctx := ctxT(t)
	p := newLocal(t, t.TempDir(), 3*time.Second)
	defer func() { stopAll(p); p.Close() }()
	pt := port()
	vm := providertest.Machine(t, "site-a", "app1", "10.1.0.4", pt, t.TempDir(), nil)
	vm.Boot.Command[0] = "standby"
	if err := p.StartVM(ctx, "job", vm); err != nil {
		t.Fatal(err)
	}
	waitOK(t, ctx, p, provider.Check{From: "site-a/app1", HTTP: fmt.Sprintf("http://10.1.0.4:%d/health", pt)})

	bare, err := local.New(local.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if err := bare.StartVM(ctx, "job", vm); !errors.Is(err, provider.ErrInvalid) {
		t.Fatalf("standby without an executable: got %v", err)
	}
}
