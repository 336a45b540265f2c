package providertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/spec"
)

// Names of the suite's topology. Providers that must know circuits ahead of
// time (netlab) get them from Circuits and OnPremises.
const (
	SiteA   = "site-a"
	SiteB   = "site-b"
	OnPrem  = "hq"
	Circuit = "er-test"
)

// OnPremises is the on-premises site the suite's checks start from.
func OnPremises() []spec.OnPremises {
	return []spec.OnPremises{{
		Name:         OnPrem,
		AddressSpace: []spec.Prefix{spec.MustPrefix("192.168.0.0/16")},
		Hosts:        []spec.Host{{Name: "client", IPAddress: spec.MustAddr("192.168.1.10")}},
	}}
}

// Circuits are the circuits the suite's connections name.
func Circuits() []spec.Circuit {
	return []spec.Circuit{{Name: Circuit, PeeringLocation: "Hong Kong", Tier: "Standard", BandwidthMbps: 100, OnPremises: OnPrem}}
}

// network is a small hub and spoke at site: every kind of network resource,
// in creation order.
func network(site string) []provider.Resource {
	rt := &spec.RouteTable{Name: "spoke-rt", Routes: []spec.Route{{
		Name: "default-via-nva", AddressPrefix: spec.MustPrefix("0.0.0.0/0"),
		NextHopType: spec.NextHopVirtualAppliance, NextHopIPAddress: spec.MustAddr("10.10.10.10"),
	}}}
	hub := &spec.VirtualNetwork{Name: "hub-vnet", AddressSpace: []spec.Prefix{spec.MustPrefix("10.10.10.0/24")}, Subnets: []spec.Subnet{
		{Name: "nva-subnet", AddressPrefix: spec.MustPrefix("10.10.10.0/25")},
		{Name: "GatewaySubnet", AddressPrefix: spec.MustPrefix("10.10.10.128/25")},
	}}
	spoke := &spec.VirtualNetwork{Name: "spoke-vnet", AddressSpace: []spec.Prefix{spec.MustPrefix("10.1.0.0/24")}}
	return []provider.Resource{
		{Site: site, RouteTable: rt},
		{Site: site, VirtualNetwork: hub},
		{Site: site, VirtualNetwork: spoke},
		{Site: site, Subnet: &provider.Subnet{VirtualNetwork: "spoke-vnet", Subnet: spec.Subnet{Name: "app-subnet", AddressPrefix: spec.MustPrefix("10.1.0.0/24"), RouteTable: "spoke-rt"}}},
		{Site: site, Appliance: &spec.Appliance{Name: "hub-nva", VirtualNetwork: "hub-vnet", Subnet: "nva-subnet", IPAddress: spec.MustAddr("10.10.10.10")}},
		{Site: site, Gateway: &spec.Gateway{Name: "hub-ergw", VirtualNetwork: "hub-vnet", Type: "ExpressRoute", Sku: "Standard"}},
		{Site: site, Peering: &spec.Peering{Name: "spoke-to-hub", From: "spoke-vnet", To: "hub-vnet", AllowVirtualNetworkAccess: true, AllowForwardedTraffic: true, UseRemoteGateways: true}},
		{Site: site, Peering: &spec.Peering{Name: "hub-to-spoke", From: "hub-vnet", To: "spoke-vnet", AllowVirtualNetworkAccess: true, AllowForwardedTraffic: true, AllowGatewayTransit: true}},
		{Site: site, Connection: &spec.Connection{Name: "hub-ergw-test", Gateway: "hub-ergw", Circuit: Circuit}},
	}
}

func host() provider.Resource {
	h := OnPremises()[0].Hosts[0]
	return provider.Resource{Site: OnPrem, Host: &h}
}

// refsOf lists what creating rs makes: the resources and their subnets.
func refsOf(t *testing.T, rs ...provider.Resource) []provider.Ref {
	t.Helper()
	var out []provider.Ref
	for _, r := range rs {
		ref, err := r.Ref()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ref)
		if v := r.VirtualNetwork; v != nil {
			for _, s := range v.Subnets {
				out = append(out, provider.Ref{Site: r.Site, Kind: provider.KindSubnet, Name: v.Name + "/" + s.Name})
			}
		}
	}
	return sortRefs(out)
}

func sortRefs(r []provider.Ref) []provider.Ref {
	slices.SortFunc(r, func(a, b provider.Ref) int { return strings.Compare(a.String(), b.String()) })
	return r
}

// Run runs the suite. newProvider returns a fresh, empty provider for each
// subtest and arranges its own teardown with t.Cleanup.
func Run(t *testing.T, newProvider func(t *testing.T) provider.Provider) {
	port := 20000 + rand.IntN(20000)
	cases := []struct {
		name string
		run  func(t *testing.T, ctx context.Context, p provider.Provider, port int)
	}{
		{"CreateTwiceIsOne", testCreateTwice},
		{"MissingParent", testMissingParent},
		{"DeleteMissing", testDeleteMissing},
		{"ListByTags", testListByTags},
		{"DeleteInUse", testDeleteInUse},
		{"MachineAndChecks", testMachine},
		{"CleanupLeavesNothing", testCleanup},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			c.run(t, ctx, newProvider(t), port)
		})
	}
}

func create(t *testing.T, ctx context.Context, p provider.Provider, job string, rs ...provider.Resource) {
	t.Helper()
	for _, r := range rs {
		if err := p.CreateNetwork(ctx, job, r); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
}

func list(t *testing.T, ctx context.Context, p provider.Provider, f provider.Filter) []provider.Item {
	t.Helper()
	items, err := p.List(ctx, f)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return items
}

func refsOfItems(items []provider.Item) []provider.Ref {
	var out []provider.Ref
	for _, it := range items {
		out = append(out, it.Ref)
	}
	return sortRefs(out)
}

func wantRefs(t *testing.T, what string, got, want []provider.Ref) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

func testCreateTwice(t *testing.T, ctx context.Context, p provider.Provider, _ int) {
	net := append(network(SiteA), host())
	create(t, ctx, p, "job-1", net...)
	create(t, ctx, p, "job-1", net...)
	wantRefs(t, "after creating twice", refsOfItems(list(t, ctx, p, provider.Filter{})), refsOf(t, net...))

	// A changed definition updates in place and keeps the maker's tag.
	changed := *net[6].Peering
	changed.AllowForwardedTraffic = false
	create(t, ctx, p, "job-2", provider.Resource{Site: SiteA, Peering: &changed})
	items := list(t, ctx, p, provider.Filter{})
	wantRefs(t, "after an update", refsOfItems(items), refsOf(t, net...))
	for _, it := range items {
		if it.Job != "job-1" {
			t.Fatalf("%s is tagged %q after another job re-created it; want the maker, job-1", it.Ref, it.Job)
		}
	}
}

func testMissingParent(t *testing.T, ctx context.Context, p provider.Provider, _ int) {
	for _, r := range []provider.Resource{
		{Site: SiteA, Subnet: &provider.Subnet{VirtualNetwork: "no-vnet", Subnet: spec.Subnet{Name: "s", AddressPrefix: spec.MustPrefix("10.9.0.0/24")}}},
		{Site: SiteA, Connection: &spec.Connection{Name: "c", Gateway: "no-gw", Circuit: Circuit}},
		{Site: SiteA, Appliance: &spec.Appliance{Name: "a", VirtualNetwork: "no-vnet", Subnet: "s", IPAddress: spec.MustAddr("10.9.0.4")}},
	} {
		err := p.CreateNetwork(ctx, "job-1", r)
		if !errors.Is(err, provider.ErrNotFound) {
			ref, _ := r.Ref()
			t.Errorf("create %s with a missing parent: got %v, want ErrNotFound", ref, err)
		}
	}
	if err := p.CreateNetwork(ctx, "", host()); !errors.Is(err, provider.ErrInvalid) {
		t.Errorf("create without a job: got %v, want ErrInvalid", err)
	}
	if items := list(t, ctx, p, provider.Filter{}); len(items) != 0 {
		t.Fatalf("failed creates left %v", items)
	}
}

func testDeleteMissing(t *testing.T, ctx context.Context, p provider.Provider, _ int) {
	for _, k := range provider.DeleteOrder {
		if k == provider.KindVM {
			continue
		}
		if err := p.DeleteNetwork(ctx, provider.Ref{Site: SiteA, Kind: k, Name: "missing"}); err != nil {
			t.Errorf("delete missing %s: %v", k, err)
		}
	}
	if err := p.StopVM(ctx, SiteA, "missing"); err != nil {
		t.Errorf("stop missing machine: %v", err)
	}
	create(t, ctx, p, "job-1", host())
	ref, _ := host().Ref()
	for i := range 2 {
		if err := p.DeleteNetwork(ctx, ref); err != nil {
			t.Fatalf("delete %s, time %d: %v", ref, i+1, err)
		}
	}
	if items := list(t, ctx, p, provider.Filter{}); len(items) != 0 {
		t.Fatalf("left after delete: %v", items)
	}
}

func testListByTags(t *testing.T, ctx context.Context, p provider.Provider, _ int) {
	a, b := network(SiteA), network(SiteB)
	create(t, ctx, p, "job-a", a...)
	create(t, ctx, p, "job-b", b...)
	create(t, ctx, p, "job-b", host())
	create(t, ctx, p, "job-b", a[0]) // exists: stays job-a's

	wantRefs(t, "job-a", refsOfItems(list(t, ctx, p, provider.Filter{Job: "job-a"})), refsOf(t, a...))
	wantRefs(t, "job-b", refsOfItems(list(t, ctx, p, provider.Filter{Job: "job-b"})), refsOf(t, append(b, host())...))
	wantRefs(t, "everything", refsOfItems(list(t, ctx, p, provider.Filter{})), refsOf(t, append(append(a, b...), host())...))
	wantRefs(t, "site-b", refsOfItems(list(t, ctx, p, provider.Filter{Site: SiteB})), refsOf(t, b...))
	gws := list(t, ctx, p, provider.Filter{Kind: provider.KindGateway})
	if len(gws) != 2 {
		t.Fatalf("gateways: %v", gws)
	}
	if items := list(t, ctx, p, provider.Filter{Job: "job-none"}); len(items) != 0 {
		t.Fatalf("unknown job lists %v", items)
	}
}

func testDeleteInUse(t *testing.T, ctx context.Context, p provider.Provider, _ int) {
	net := network(SiteA)
	create(t, ctx, p, "job-1", net...)
	for _, ref := range []provider.Ref{
		{Site: SiteA, Kind: provider.KindGateway, Name: "hub-ergw"},
		{Site: SiteA, Kind: provider.KindRouteTable, Name: "spoke-rt"},
		{Site: SiteA, Kind: provider.KindVirtualNetwork, Name: "hub-vnet"},
	} {
		if err := p.DeleteNetwork(ctx, ref); !errors.Is(err, provider.ErrInUse) {
			t.Errorf("delete %s while in use: got %v, want ErrInUse", ref, err)
		}
	}
	wantRefs(t, "after refused deletes", refsOfItems(list(t, ctx, p, provider.Filter{})), refsOf(t, net...))
}

// Machine builds a test machine at site with ip in the suite's spoke subnet,
// for the suite and for implementation tests: the test binary serving
// /health, /whoami/SITE and /env/NAME on port at STANDBY_IP_0, with a data
// disk, recording its pids in pidDir (see Alive). extraEnv adds to its
// environment.
func Machine(t *testing.T, site, name, ip string, port int, pidDir string, extraEnv map[string]string) provider.VM {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), name+"-data.img")
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envRole: "machine", envPort: strconv.Itoa(port), envPidDir: pidDir}
	for k, v := range extraEnv {
		env[k] = v
	}
	return provider.VM{
		Site: site, Name: name,
		NICs:  []spec.NIC{{VirtualNetwork: "spoke-vnet", Subnet: "app-subnet", IPAddress: spec.MustAddr(ip)}},
		Disks: []provider.Disk{{Name: "data", Path: disk}},
		Boot:  spec.Boot{Command: []string{exe, "-test.run=^$"}, Env: env},
	}
}

func waitCheck(t *testing.T, ctx context.Context, p provider.Provider, c provider.Check) provider.Result {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := provider.WaitCheck(cctx, p, c, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("check %+v: %v", c, err)
	}
	return res
}

func testMachine(t *testing.T, ctx context.Context, p provider.Provider, port int) {
	pids := t.TempDir()
	create(t, ctx, p, "job-1", append(network(SiteA), host())...)
	vm := Machine(t, SiteA, "app1", "10.1.0.4", port, pids, nil)
	if err := p.StartVM(ctx, "job-1", vm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.StopVM(context.Background(), SiteA, "app1") })
	url := fmt.Sprintf("http://10.1.0.4:%d", port)
	waitCheck(t, ctx, p, provider.Check{From: OnPrem + "/client", HTTP: url + "/health"})
	waitCheck(t, ctx, p, provider.Check{From: OnPrem + "/client", HTTP: url + "/whoami/" + SiteA})
	waitCheck(t, ctx, p, provider.Check{From: OnPrem + "/client", TCP: fmt.Sprintf("10.1.0.4:%d", port)})
	if res, err := p.Check(ctx, provider.Check{From: OnPrem + "/client", HTTP: url + "/whoami/elsewhere"}); err != nil || res.OK {
		t.Fatalf("a check that must fail: %+v, %v", res, err)
	}
	if res, err := p.Check(ctx, provider.Check{From: OnPrem + "/client", TCP: "10.1.0.99:1"}); err != nil || res.OK {
		t.Fatalf("a check of an address nobody holds: %+v, %v", res, err)
	}
	if _, err := p.Check(ctx, provider.Check{From: OnPrem + "/nobody", HTTP: url + "/health"}); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("check from a missing host: got %v, want ErrNotFound", err)
	}

	// Starting it again with the same definition changes nothing.
	if err := p.StartVM(ctx, "job-2", vm); err != nil {
		t.Fatal(err)
	}
	vms := list(t, ctx, p, provider.Filter{Kind: provider.KindVM})
	if len(vms) != 1 || vms[0].Job != "job-1" || vms[0].State != "running" {
		t.Fatalf("machines after starting twice: %+v", vms)
	}
	before := Alive(t, pids)
	if len(before) != 2 {
		t.Fatalf("the machine should run 2 processes, found %v", before)
	}
	if err := p.StopVM(ctx, SiteA, "app1"); err != nil {
		t.Fatal(err)
	}
	if left := Alive(t, pids); len(left) != 0 {
		t.Fatalf("processes left after stop: %v", left)
	}
	if vms := list(t, ctx, p, provider.Filter{Kind: provider.KindVM}); len(vms) != 0 {
		t.Fatalf("machines after stop: %+v", vms)
	}
}

func testCleanup(t *testing.T, ctx context.Context, p provider.Provider, port int) {
	pids := t.TempDir()
	create(t, ctx, p, "job-1", append(network(SiteA), host())...)
	create(t, ctx, p, "job-other", network(SiteB)...)
	for i, name := range []string{"app1", "app2"} {
		vm := Machine(t, SiteA, name, fmt.Sprintf("10.1.0.%d", 4+i), port, pids, nil)
		if err := p.StartVM(ctx, "job-1", vm); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		waitCheck(t, ctx, p, provider.Check{From: OnPrem + "/client", HTTP: fmt.Sprintf("http://10.1.0.%d:%d/health", 4+i, port)})
	}
	if n := len(Alive(t, pids)); n != 4 {
		t.Fatalf("want 4 processes running, found %d", n)
	}
	if err := provider.Cleanup(ctx, p, "job-1"); err != nil {
		t.Fatal(err)
	}
	if items := list(t, ctx, p, provider.Filter{Job: "job-1"}); len(items) != 0 {
		t.Fatalf("left after cleanup: %v", items)
	}
	if left := Alive(t, pids); len(left) != 0 {
		t.Fatalf("processes left after cleanup: %v", left)
	}
	wantRefs(t, "the other job's", refsOfItems(list(t, ctx, p, provider.Filter{})), refsOf(t, network(SiteB)...))
	if err := provider.Cleanup(ctx, p, "job-1"); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
	if err := provider.Cleanup(ctx, p, "job-other"); err != nil {
		t.Fatal(err)
	}
	if items := list(t, ctx, p, provider.Filter{}); len(items) != 0 {
		t.Fatalf("left after cleaning up everything: %v", items)
	}
}

// Alive lists the processes recorded in pidDir by test machines that still
// run (the same pid and start time).
func Alive(t *testing.T, pidDir string) []int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(pidDir, "*.pids"))
	if err != nil {
		t.Fatal(err)
	}
	var alive []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var pid int
			var ticks uint64
			if _, err := fmt.Sscan(line, &pid, &ticks); err != nil {
				t.Fatalf("pid file %s: %v", f, err)
			}
			if ticks != 0 && startTicks(pid) == ticks {
				alive = append(alive, pid)
			}
		}
	}
	return alive
}
