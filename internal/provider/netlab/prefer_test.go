package netlab_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/spec"
)

// standbyBinary builds the standby binary into the test's directory, for
// machines that run "standby workload ledger".
func standbyBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "standby")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/standby-dr/standby/cmd/standby").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestLabPreferTarget connects the two-circuit example's generated target
// network while the source's connection is still up: on-premises reaches
// the spokes through er-hongkong until it is told to prefer the target
// site, then through er-singapore to the ledgers running there.
func TestLabPreferTarget(t *testing.T) {
	needRoot(t)
	bin := standbyBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	s := loadExample(t, "hub-spoke-two-circuits.yaml")
	plan := netplan.Derive(s)
	target := plan.Topology.TargetSite
	o := netlab.ForSpec(s)
	o.Executable = bin
	l := &lab{t: t, ctx: ctx, s: s, plan: plan, p: newLab(t, o)}
	for _, site := range plan.Topology.SourceSites {
		l.apply(provider.Resources(s.Network(site))...)
	}
	l.apply(provider.Resources(plan.Target)...)
	for _, op := range s.OnPremises {
		for i := range op.Hosts {
			l.apply(provider.Resource{Site: op.Name, Host: &op.Hosts[i]})
		}
	}
	disks := t.TempDir()
	for _, vm := range s.Protection.VirtualMachines {
		i := slices.IndexFunc(plan.Machines, func(m netplan.MachineMap) bool { return m.VM == vm.Name && m.NIC == 0 })
		if i < 0 {
			t.Fatalf("the plan does not place %s", vm.Name)
		}
		pl := plan.Machines[i].Target
		disk := filepath.Join(disks, vm.Name+"-data.img")
		if err := os.WriteFile(disk, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		nic := vm.NICs[0]
		nic.VirtualNetwork, nic.Subnet, nic.IPAddress.Addr = pl.VNet, pl.Subnet, pl.IP
		err := l.p.StartVM(ctx, "xcheck", provider.VM{Site: pl.Site, Name: vm.Name, NICs: []spec.NIC{nic},
			Disks: []provider.Disk{{Name: "data", Path: disk}}, Boot: *vm.Boot})
		if err != nil {
			t.Fatal(err)
		}
	}

	trace := func(dst string) *netlab.Trace {
		t.Helper()
		tr, err := l.p.Trace(ctx, "hq/client", netip.MustParseAddr(dst), netlab.TraceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	// The default: the source's connection is preferred (no machine
	// answers at the source, but the path is the source's).
	if tr := trace("10.1.0.4"); !slices.Contains(tr.Nodes(), "er-hongkong") || slices.Contains(tr.Nodes(), "er-singapore") {
		t.Fatalf("hq/client -> 10.1.0.4 before Prefer does not take er-hongkong: %v %+v", tr.Nodes(), tr)
	}

	if err := l.p.Prefer(ctx, target); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"10.1.0.4", "10.2.0.4"} {
		c := provider.Check{From: "hq/client", HTTP: "http://" + dst + ":8080/health"}
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		res, err := provider.WaitCheck(wctx, l.p, c, 100*time.Millisecond)
		wcancel()
		if err != nil || !res.OK {
			t.Errorf("%s from hq/client with %s preferred: %+v %v", c.HTTP, target, res, err)
		}
	}
	tr := trace("10.1.0.4")
	if tr.Result != "delivered" || !slices.Contains(tr.Nodes(), "er-singapore") || !slices.Contains(tr.Nodes(), target+"/hub-nva-asr") ||
		slices.Contains(tr.Nodes(), "er-hongkong") {
		t.Errorf("hq/client -> 10.1.0.4 with %s preferred: %v %+v", target, tr.Nodes(), tr)
	}
	conns, err := l.p.List(ctx, provider.Filter{Kind: provider.KindConnection})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(conns, func(it provider.Item) bool { return it.Name == "hub-ergw-hongkong" }) || len(conns) != 2 {
		t.Errorf("connections with both sites connected: %+v", conns)
	}
}
