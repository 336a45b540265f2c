package netplan

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/spec"
)

const twoCircuits = "../../examples/hub-spoke-two-circuits.yaml"
const oneCircuit = "../../examples/single-circuit-same-ip.yaml"

func TestTrace(t *testing.T) {
	cases := []struct {
		name      string
		file      string
		state     string
		from, to  string
		result    string
		nodes     []string // the hops' nodes, in order (a subsequence)
		routeHas  map[string]string
		reasonHas string
	}{
		{
			name: "on-premises to spoke1 before failover crosses Hong Kong, the hub gateway, the NVA and the spoke1 peering",
			file: twoCircuits, state: StateSource, from: "hq/client", to: "10.1.0.4", result: Delivered,
			nodes:    []string{"hq/client", "er-hongkong", "eastasia/hub-ergw", "eastasia/hub-nva"},
			routeHas: map[string]string{"eastasia/hub-ergw": "gateway-rt/spoke1-via-nva", "eastasia/hub-nva": "peering hub-to-spoke1"},
		},
		{
			name: "after failover it crosses Singapore, the target hub and the target NVA",
			file: twoCircuits, state: StateTarget, from: "hq/client", to: "10.1.0.4", result: Delivered,
			nodes:    []string{"hq/client", "er-singapore", "southeastasia/hub-ergw-asr", "southeastasia/hub-nva-asr"},
			routeHas: map[string]string{"southeastasia/hub-ergw-asr": "gateway-rt-asr/spoke1-via-nva", "southeastasia/hub-nva-asr": "peering hub-to-spoke1"},
		},
		{
			name: "spoke1 to spoke2 goes through the NVA",
			file: twoCircuits, state: StateSource, from: "eastasia/app1", to: "10.2.0.4", result: Delivered,
			nodes:    []string{"eastasia/app1", "eastasia/hub-nva"},
			routeHas: map[string]string{"eastasia/app1": "spoke-rt/default-via-nva"},
		},
		{
			name: "spoke2 to spoke1 goes through the NVA",
			file: twoCircuits, state: StateSource, from: "eastasia/app2", to: "10.1.0.4", result: Delivered,
			nodes: []string{"eastasia/app2", "eastasia/hub-nva"},
		},
		{
			name: "spoke to spoke through the target NVA after failover",
			file: twoCircuits, state: StateTarget, from: "eastasia/app1", to: "10.2.0.4", result: Delivered,
			nodes: []string{"southeastasia/app1", "southeastasia/hub-nva-asr"},
		},
		{
			name: "the test network is unreachable from on-premises",
			file: twoCircuits, state: StateTest, from: "hq/client", to: "172.30.1.4", result: Dropped,
			reasonHas: "isolated test network",
		},
		{
			name: "a drill leaves production reachable",
			file: twoCircuits, state: StateTest, from: "hq/client", to: "10.1.0.4", result: Delivered,
			nodes: []string{"hq/client", "er-hongkong", "eastasia/hub-ergw", "eastasia/hub-nva"},
		},
		{
			name: "single circuit: during the switch nothing advertises the spokes",
			file: oneCircuit, state: StateFailover, from: "hq/client", to: "10.1.0.4", result: Dropped,
			reasonHas: "no route",
		},
		{
			name: "single circuit: after failover the same circuit reaches the target hub",
			file: oneCircuit, state: StateTarget, from: "hq/client", to: "10.1.0.4", result: Delivered,
			nodes: []string{"hq/client", "er-hongkong", "southeastasia/hub-ergw-asr", "southeastasia/hub-nva-asr"},
		},
		{
			name: "a VM reaches on-premises through its hub's gateway (its spoke route table sends it to the NVA first)",
			file: twoCircuits, state: StateSource, from: "eastasia/hub-nva", to: "192.168.1.10", result: Delivered,
			nodes: []string{"eastasia/hub-nva", "eastasia/hub-ergw", "er-hongkong"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustDerive(t, c.file)
			tr, err := p.Trace(c.state, c.from, netip.MustParseAddr(c.to))
			if err != nil {
				t.Fatal(err)
			}
			if tr.Result != c.result {
				t.Fatalf("result %s (%s), want %s; hops %+v", tr.Result, tr.Reason, c.result, tr.Hops)
			}
			k := 0
			for _, h := range tr.Hops {
				if k < len(c.nodes) && h.Node == c.nodes[k] {
					k++
				}
				if want, ok := c.routeHas[h.Node]; ok && !strings.Contains(h.Route, want) {
					t.Errorf("at %s route %q, want it to mention %q", h.Node, h.Route, want)
				}
			}
			if k != len(c.nodes) {
				t.Errorf("hops %+v do not pass %v in order", tr.Hops, c.nodes)
			}
			if c.reasonHas != "" && !strings.Contains(tr.Reason, c.reasonHas) {
				t.Errorf("reason %q, want it to mention %q", tr.Reason, c.reasonHas)
			}
		})
	}
}

// Turning allowForwardedTraffic off on one spoke's side breaks spoke to
// spoke, as the NVA's forwarded traffic may no longer enter that spoke.
func TestTraceForwardedTrafficOff(t *testing.T) {
	data, err := os.ReadFile(twoCircuits)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "{name: spoke2-to-hub, from: spoke2-vnet, to: hub-vnet, allowVirtualNetworkAccess: true, allowForwardedTraffic: true", "{name: spoke2-to-hub, from: spoke2-vnet, to: hub-vnet, allowVirtualNetworkAccess: true, allowForwardedTraffic: false", 1)
	s, err := spec.Parse("x.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	p := Derive(s)
	tr, err := p.Trace(StateSource, "eastasia/app1", netip.MustParseAddr("10.2.0.4"))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Result != Dropped || !strings.Contains(tr.Reason, "forwarded traffic") {
		t.Errorf("want dropped for forwarded traffic, got %s: %s", tr.Result, tr.Reason)
	}
	// The other direction is still fine up to spoke1.
	tr, _ = p.Trace(StateSource, "eastasia/app2", netip.MustParseAddr("10.1.0.4"))
	if tr.Result != Delivered {
		t.Errorf("spoke2 to spoke1: %s %s", tr.Result, tr.Reason)
	}
}

// Longest prefix wins; on equal prefixes user beats system beats BGP.
func TestPick(t *testing.T) {
	pf := netip.MustParsePrefix
	rs := []Route{
		{Prefix: pf("0.0.0.0/0"), Kind: kindSystemDefault, NextHopType: "Internet"},
		{Prefix: pf("10.1.0.0/24"), Kind: kindSystemVNet, NextHopType: "VNetPeering"},
		{Prefix: pf("10.1.0.0/24"), Kind: kindBGP, NextHopType: "VirtualNetworkGateway"},
		{Prefix: pf("10.1.0.0/16"), Kind: kindUser, NextHopType: "None"},
	}
	if r, _ := pick(rs, netip.MustParseAddr("10.1.0.4")); r.NextHopType != "VNetPeering" {
		t.Errorf("peered space must beat BGP on an equal prefix and a shorter user route: got %s", r.NextHopType)
	}
	rs = append(rs, Route{Prefix: pf("10.1.0.0/24"), Kind: kindUser, NextHopType: "VirtualAppliance"})
	if r, _ := pick(rs, netip.MustParseAddr("10.1.0.4")); r.NextHopType != "VirtualAppliance" {
		t.Errorf("a user route beats system on an equal prefix: got %s", r.NextHopType)
	}
	if r, _ := pick(rs, netip.MustParseAddr("10.1.7.1")); r.NextHopType != "None" {
		t.Errorf("longest prefix: got %s", r.NextHopType)
	}
	bgp := []Route{
		{Prefix: pf("192.168.0.0/16"), Kind: kindBGP, NextHopType: "VirtualNetworkGateway"},
		{Prefix: pf("0.0.0.0/0"), Kind: kindSystemDefault, NextHopType: "Internet"},
	}
	if r, _ := pick(bgp, netip.MustParseAddr("192.168.1.1")); r.NextHopType != "VirtualNetworkGateway" {
		t.Errorf("BGP beats the default: got %s", r.NextHopType)
	}
}

func TestTraceBadInput(t *testing.T) {
	p := mustDerive(t, twoCircuits)
	if _, err := p.Trace("sideways", "hq/client", netip.MustParseAddr("10.1.0.4")); err == nil {
		t.Error("an unknown state must be an error")
	}
	if _, err := p.Trace(StateSource, "nowhere/none", netip.MustParseAddr("10.1.0.4")); err == nil {
		t.Error("an unknown host must be an error")
	}
}
