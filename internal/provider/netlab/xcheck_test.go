package netlab_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/spec"
)

const examples = "../../../examples/"

// lab is one example built in netlab.
type lab struct {
	t    *testing.T
	ctx  context.Context
	s    *spec.Spec
	plan *netplan.Plan
	p    *netlab.Provider
}

func buildExample(t *testing.T, ctx context.Context, s *spec.Spec, o netlab.Options) *lab {
	t.Helper()
	l := &lab{t: t, ctx: ctx, s: s, plan: netplan.Derive(s)}
	l.p = newLab(t, o)
	for _, site := range l.plan.Topology.SourceSites {
		l.apply(provider.Resources(s.Network(site))...)
	}
	if n := s.Network(l.plan.Topology.TargetSite); n != nil {
		l.apply(provider.Resources(n)...)
	}
	for _, op := range s.OnPremises {
		for i := range op.Hosts {
			l.apply(provider.Resource{Site: op.Name, Host: &op.Hosts[i]})
		}
	}
	l.startAt(func(m netplan.MachineMap) netplan.Placement { return m.Source })
	return l
}

func loadExample(t *testing.T, name string) *spec.Spec {
	t.Helper()
	s, err := spec.Load(examples + name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (l *lab) apply(rs ...provider.Resource) {
	l.t.Helper()
	if err := l.p.Apply(l.ctx, "xcheck", rs...); err != nil {
		l.t.Fatal(err)
	}
}

// startAt starts every protected machine where place puts it, as a
// machine that only answers pings.
func (l *lab) startAt(place func(netplan.MachineMap) netplan.Placement) {
	l.t.Helper()
	for _, m := range l.plan.Machines {
		pl := place(m)
		nic := spec.NIC{VirtualNetwork: pl.VNet, Subnet: pl.Subnet, IPAddress: spec.Addr{Addr: pl.IP}}
		if err := l.p.StartVM(l.ctx, "xcheck", sleeper(pl.Site, m.VM, nic)); err != nil {
			l.t.Fatal(err)
		}
	}
}

func (l *lab) stopAll() {
	l.t.Helper()
	items, err := l.p.List(l.ctx, provider.Filter{Kind: provider.KindVM})
	if err != nil {
		l.t.Fatal(err)
	}
	for _, it := range items {
		if err := l.p.StopVM(l.ctx, it.Site, it.Name); err != nil {
			l.t.Fatal(err)
		}
	}
}

// predicted is netplan's path beyond the source: the nodes of its hops
// after the first, and the node it delivers to.
func predicted(tr *netplan.Trace) []string {
	var out []string
	for _, h := range tr.Hops[1:] {
		if len(out) == 0 || out[len(out)-1] != h.Node {
			out = append(out, h.Node)
		}
	}
	if tr.Result == netplan.Delivered {
		out = append(out, strings.TrimPrefix(tr.Reason, "delivered to "))
	}
	return out
}

// real is the nodes that answered the probes, on-premises routers left
// out (netplan does not count them as hops).
func (l *lab) real(tr *netlab.Trace) []string {
	var out []string
	for _, n := range tr.Nodes() {
		if !slices.ContainsFunc(l.s.OnPremises, func(o spec.OnPremises) bool { return o.Name == n }) {
			out = append(out, n)
		}
	}
	return out
}

// crossCheck traces from `from` to dst with netplan in state and with real
// probes from realFrom, and wants the same Azure-side hops and result.
func (l *lab) crossCheck(plan *netplan.Plan, state, from, realFrom, dst string) *netlab.Trace {
	l.t.Helper()
	want, err := plan.Trace(state, from, netip.MustParseAddr(dst))
	if err != nil {
		l.t.Fatal(err)
	}
	got, err := l.p.Trace(l.ctx, realFrom, netip.MustParseAddr(dst), netlab.TraceOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	if w, g := predicted(want), l.real(got); !slices.Equal(w, g) || want.Result != got.Result {
		l.t.Errorf("%s state, %s -> %s:\n netplan %s %v (%s)\n real    %s %v (%s)\n real hops %+v",
			state, from, dst, want.Result, w, want.Reason, got.Result, g, got.Reason, got.Hops)
	}
	return got
}

var tracerCases = []struct{ from, to string }{
	{"hq/client", "10.1.0.4"},
	{"eastasia/app1", "10.2.0.4"},
	{"eastasia/app2", "10.1.0.4"},
}

// TestLabCrossCheck builds each example's source site, compares netplan's
// paths with real probes, then fails over the network (source connections
// deleted, the generated target built, the machines moved) and compares
// again in the target state.
func TestLabCrossCheck(t *testing.T) {
	for _, name := range []string{"hub-spoke-two-circuits.yaml", "single-circuit-same-ip.yaml", "local-quickstart.yaml"} {
		t.Run(name, func(t *testing.T) {
			needRoot(t)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			s := loadExample(t, name)
			l := buildExample(t, ctx, s, netlab.ForSpec(s))
			for _, c := range tracerCases {
				l.crossCheck(l.plan, netplan.StateSource, c.from, c.from, c.to)
			}

			target := provider.Resources(l.plan.Target)
			if l.plan.Topology.Kind == netplan.SingleCircuit {
				// Both connections on the one circuit at once: refused.
				err := l.p.Apply(ctx, "xcheck", target...)
				if err == nil || !strings.Contains(err.Error(), "ER-04") || !errors.Is(err, provider.ErrConflict) {
					t.Fatalf("target connection beside the source's on one circuit: got %v, want an ER-04 conflict", err)
				}
			}
			if l.plan.Topology.Kind != netplan.SingleCircuit {
				// Two circuits: the target is connected while the source's
				// connection is up, and on-premises still prefers the source.
				l.apply(target...)
				tr, err := l.p.Trace(ctx, "hq/client", netip.MustParseAddr("10.1.0.4"), netlab.TraceOptions{})
				if err != nil || tr.Result != "delivered" || !slices.Contains(tr.Nodes(), "eastasia/hub-nva") {
					t.Fatalf("hq/client -> app1 with both sites connected: %+v %v", tr, err)
				}
			}
			for _, site := range l.plan.Topology.SourceSites {
				for _, c := range s.Network(site).Connections {
					if err := l.p.DeleteNetwork(ctx, provider.Ref{Site: site, Kind: provider.KindConnection, Name: c.Name}); err != nil {
						t.Fatal(err)
					}
				}
			}
			l.apply(target...)
			l.stopAll()
			l.startAt(func(m netplan.MachineMap) netplan.Placement { return m.Target })
			for _, c := range tracerCases {
				realFrom := c.from
				if vm, ok := strings.CutPrefix(c.from, "eastasia/"); ok {
					realFrom = l.plan.Topology.TargetSite + "/" + vm
				}
				l.crossCheck(l.plan, netplan.StateTarget, c.from, realFrom, c.to)
			}
		})
	}
}

// TestLabHubSpokePaths checks the acceptance paths on the two-circuit
// example: on-premises to app1 and spoke to spoke cross the NVA, and
// turning allowForwardedTraffic off on spoke2-to-hub breaks app1 -> app2
// as netplan predicts.
func TestLabHubSpokePaths(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := loadExample(t, "hub-spoke-two-circuits.yaml")
	l := buildExample(t, ctx, s, netlab.ForSpec(s))
	for _, c := range tracerCases {
		tr := l.crossCheck(l.plan, netplan.StateSource, c.from, c.from, c.to)
		if tr.Result != "delivered" || !slices.Contains(tr.Nodes(), "eastasia/hub-nva") {
			t.Errorf("%s -> %s does not cross the NVA: %+v", c.from, c.to, tr)
		}
	}

	off := *s
	off.Networks = slices.Clone(s.Networks)
	n := &off.Networks[0]
	n.Peerings = slices.Clone(n.Peerings)
	var changed *spec.Peering
	for i := range n.Peerings {
		if n.Peerings[i].Name == "spoke2-to-hub" {
			n.Peerings[i].AllowForwardedTraffic = false
			changed = &n.Peerings[i]
		}
	}
	l.apply(provider.Resource{Site: n.Site, Peering: changed})
	tr := l.crossCheck(netplan.Derive(&off), netplan.StateSource, "eastasia/app1", "eastasia/app1", "10.2.0.4")
	if tr.Result != "dropped" || !slices.Equal(tr.Nodes(), []string{"eastasia/hub-nva"}) {
		t.Errorf("app1 -> app2 with forwarded traffic refused by spoke2: %+v", tr)
	}
}

// TestLabForceOverlap connects the single-circuit example's target hub beside
// the source's with Force: both are installed as multipath at the circuit.
func TestLabForceOverlap(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := loadExample(t, "single-circuit-same-ip.yaml")
	o := netlab.ForSpec(s)
	o.Force = true
	l := buildExample(t, ctx, s, o)
	l.apply(provider.Resources(l.plan.Target)...)
	ns, err := l.p.NodeNamespace(ctx, "er-hongkong")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "route", "show", "10.1.0.0/24").CombinedOutput()
	if err != nil || strings.Count(string(out), "nexthop") != 2 {
		t.Fatalf("circuit route to the spoke with both hubs connected: %s %v", out, err)
	}
}

// TestLabDownAfterCrash removes a lab whose state file is gone.
func TestLabDownAfterCrash(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := loadExample(t, "hub-spoke-two-circuits.yaml")
	l := buildExample(t, ctx, s, netlab.ForSpec(s))
	nss, err := l.p.Namespaces(ctx)
	if err != nil || len(nss) < 8 {
		t.Fatalf("namespaces: %v %v", nss, err)
	}
	items, _ := l.p.List(ctx, provider.Filter{Kind: provider.KindVM})
	if len(items) != 2 || items[0].State != "running" {
		t.Fatalf("machines: %+v", items)
	}
	if err := os.Remove(l.p.Dir() + "/state.json"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		rm, err := netlab.Down(ctx, l.p.Lab(), l.p.Dir(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && len(rm.Namespaces) != len(nss) {
			t.Errorf("down removed %v, want %d namespaces", rm.Namespaces, len(nss))
		}
		if i == 1 && (len(rm.Namespaces) != 0 || rm.Dir != "") {
			t.Errorf("a second down did something: %+v", rm)
		}
	}
	if left, _ := l.p.Namespaces(ctx); len(left) != 0 {
		t.Errorf("left: %v", left)
	}
}
