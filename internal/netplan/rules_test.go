package netplan

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/spec"
)

// ruleIDs are the rules of network-rules.md; every one must exist and be
// tested.
var ruleIDs = []string{
	"ER-01", "ER-02", "ER-03", "ER-04", "ER-05", "ER-06", "ER-07", "ER-08", "ER-09", "ER-10", "ER-11", "ER-12",
	"GW-01", "GW-02", "GW-03", "GW-04", "GW-05", "GW-06", "GW-07",
	"PE-01", "PE-02", "PE-03", "PE-04", "PE-05", "PE-06", "PE-07",
	"RT-01", "RT-02", "RT-03", "RT-04", "RT-05", "RT-06", "RT-07",
	"AS-01", "AS-02", "AS-03", "AS-04", "AS-05", "AS-06",
}

// baseSpec is a compact hub-and-spoke setup with one circuit and the same
// IPs on both sides. It passes every rule; each case varies it.
const rcBase = `version: 1
name: rules
sites:
  - {name: src, region: eastasia, provider: netlab}
  - {name: dst, region: southeastasia, provider: netlab}
onPremises:
  - name: hq
    addressSpace: [192.168.0.0/16]
    hosts: [{name: client, ipAddress: 192.168.1.10}]
circuits:
  - name: er-hk
    peeringLocation: Hong Kong
    tier: Standard
    bandwidthMbps: 1000
    onPremises: hq
    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30, secondaryPeerAddressPrefix: 172.16.0.4/30}
networks:
  - site: src
    virtualNetworks:
      - name: hub
        addressSpace: [10.10.0.0/24]
        subnets:
          - {name: nva, addressPrefix: 10.10.0.0/25}
          - {name: GatewaySubnet, addressPrefix: 10.10.0.128/27, routeTable: gw-rt}
      - name: spoke1
        addressSpace: [10.1.0.0/24]
        subnets:
          - {name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}
      - name: spoke2
        addressSpace: [10.2.0.0/24]
        subnets:
          - {name: app, addressPrefix: 10.2.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}
    peerings:
      - {name: spoke1-to-hub, from: spoke1, to: hub, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, useRemoteGateways: true}
      - {name: hub-to-spoke1, from: hub, to: spoke1, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, allowGatewayTransit: true}
      - {name: spoke2-to-hub, from: spoke2, to: hub, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, useRemoteGateways: true}
      - {name: hub-to-spoke2, from: hub, to: spoke2, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, allowGatewayTransit: true}
    routeTables:
      - name: spoke-rt
        disableBgpRoutePropagation: true
        routes:
          - {name: default-via-nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}
      - name: gw-rt
        routes:
          - {name: spoke1-via-nva, addressPrefix: 10.1.0.0/24, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}
          - {name: spoke2-via-nva, addressPrefix: 10.2.0.0/24, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}
    appliances:
      - {name: nva, virtualNetwork: hub, subnet: nva, ipAddress: 10.10.0.10}
    gateways:
      - {name: hub-gw, virtualNetwork: hub, type: ExpressRoute, sku: Standard}
    connections:
      - {name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}
  - site: dst
    virtualNetworks: []
protection:
  policies: [{name: p}]
  virtualMachines:
    - name: app1
      site: src
      policy: p
      nics: [{virtualNetwork: spoke1, subnet: app, ipAddress: 10.1.0.4}]
      disks: [{name: os, size: 64MiB}]
    - name: app2
      site: src
      policy: p
      nics: [{virtualNetwork: spoke2, subnet: app, ipAddress: 10.2.0.4}]
      disks: [{name: os, size: 64MiB}]
recovery:
  targetSite: dst
  networkMapping:
    addressing: same
    connectivity: {circuits: [er-hk]}
    testNetwork: {addressPool: 172.30.0.0/16}
  plans:
    - name: app
      groups:
        - name: backend
          virtualMachines: [app2]
          post:
            - check: {from: hq/client, tcp: "10.2.0.4:8080"}
        - name: frontend
          virtualMachines: [app1]
          post:
            - check: {from: hq/client, http: "http://10.1.0.4:8080/health"}
`

// Edits of the base spec: pairs of (text in the base, replacement).

// circuitBlock is one circuit of circuits[], with more lines at its end.
func rcCircuitBlock(name, loc, tier string, mbps int, more string) string {
	return fmt.Sprintf("  - name: %s\n    peeringLocation: %s\n    tier: %s\n    bandwidthMbps: %d\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.9.0/30, secondaryPeerAddressPrefix: 172.16.9.4/30}\n%s", name, loc, tier, mbps, more)
}

// addCircuit adds a circuit.
func rcAddCircuit(name, loc, tier string, mbps int, more string) []string {
	return []string{"networks:\n  - site: src\n", rcCircuitBlock(name, loc, tier, mbps, more) + "networks:\n  - site: src\n"}
}

// addVNet, addPeering, addConnection and addGateway add to the lists of
// the source network.
func rcAddVNet(block string) []string {
	return []string{"    peerings:\n      - {name: spoke1-to-hub", block + "    peerings:\n      - {name: spoke1-to-hub"}
}

func rcAddPeering(line string) []string {
	return []string{"    routeTables:\n      - name: spoke-rt\n", "      - " + line + "\n    routeTables:\n      - name: spoke-rt\n"}
}

func rcAddConnection(line string) []string {
	return []string{"      - {name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}\n", "      - {name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}\n      - " + line + "\n"}
}

func rcAddGateway(line string) []string {
	return []string{"    gateways:\n", "    gateways:\n      - " + line + "\n"}
}

// target replaces the empty target network with a pre-provisioned one.
func rcTarget(body string) []string {
	return []string{"  - site: dst\n    virtualNetworks: []\n", "  - site: dst\n" + body}
}

func rcTargetIn(circuit string) []string {
	return []string{"connectivity: {circuits: [er-hk]}", "connectivity: {circuits: [" + circuit + "]}"}
}

var (
	// twoCircuits: the target hub connects to a second circuit at Singapore.
	rcTwoCircuits = rcCat(rcAddCircuit("er-sg", "Singapore", "Standard", 1000, ""), rcTargetIn("er-sg"))
	// translate: the target takes 10.16.0.0/12 for 10.0.0.0/12.
	rcTranslate = []string{"addressing: same", "addressing: translate\n    addressTranslation: [{from: 10.0.0.0/12, to: 10.16.0.0/12}]"}
	// preHub pre-provisions the target hub with its gateway.
	rcPreHub = "    virtualNetworks:\n      - name: hub-asr\n        addressSpace: [10.10.0.0/24]\n        subnets:\n          - {name: nva, addressPrefix: 10.10.0.0/25}\n          - {name: GatewaySubnet, addressPrefix: 10.10.0.128/27}\n    gateways:\n      - {name: hub-gw-asr, virtualNetwork: hub-asr, type: ExpressRoute, sku: Standard}\n"
	// preConn connects the pre-provisioned target hub to the source circuit.
	rcPreConn = rcTarget(rcPreHub + "    connections:\n      - {name: hub-gw-asr-hk, gateway: hub-gw-asr, circuit: er-hk}\n")
)

func rcCat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// edit applies replacement pairs to the base spec; each old text must be
// in it exactly once at the time it is applied.
func rcEdit(t testing.TB, edits []string) string {
	t.Helper()
	s := rcBase
	if len(edits)%2 != 0 {
		t.Fatalf("edits come in pairs, got %d strings", len(edits))
	}
	for i := 0; i < len(edits); i += 2 {
		if n := strings.Count(s, edits[i]); n != 1 {
			t.Fatalf("edit %d: %q occurs %d times in the spec", i/2, edits[i], n)
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	return s
}

// load parses a spec text and derives its plan.
func rcLoad(t testing.TB, text string) *Plan {
	t.Helper()
	s, err := spec.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatalf("spec does not load: %v\n%s", err, text)
	}
	return Derive(s)
}

type rcWant struct{ sev, resource string }

type ruleCase struct {
	rule, name string
	edits      []string
	gen        func() []string // edits built in code, for large specs
	want       []rcWant        // none: the rule stays quiet
	count      int             // when set, exactly this many findings
}

// lines returns n YAML list lines made by f.
func rcLines(n int, indent string, f func(i int) string) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(indent + "- " + f(i) + "\n")
	}
	return b.String()
}

// globalReach gives er-hk Global Reach links to n circuits.
func rcGlobalReach(n int) []string {
	var circuits, names []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("gr%d", i)
		names = append(names, name)
		circuits = append(circuits, rcCircuitBlock(name, "Hong Kong", "Standard", 1000, ""))
	}
	return []string{
		"    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30, secondaryPeerAddressPrefix: 172.16.0.4/30}\n",
		"    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30, secondaryPeerAddressPrefix: 172.16.0.4/30}\n    globalReach: [" + strings.Join(names, ", ") + "]\n" + strings.Join(circuits, ""),
	}
}

// manyPeerings adds n VNets peered from `from` (one direction).
func rcManyPeerings(from string, n int) []string {
	vnets := rcLines(n, "      ", func(i int) string {
		return fmt.Sprintf("{name: s%d, addressSpace: [10.%d.%d.0/24]}", i, 100+i/256, i%256)
	})
	peerings := rcLines(n, "      ", func(i int) string {
		return fmt.Sprintf("{name: %s-to-s%d, from: %s, to: s%d, allowVirtualNetworkAccess: true}", from, i, from, i)
	})
	return rcCat(rcAddVNet(vnets), []string{"    routeTables:\n      - name: spoke-rt\n", peerings + "    routeTables:\n      - name: spoke-rt\n"})
}

// manyRoutes gives spoke-rt n routes in all.
func rcManyRoutes(n int) []string {
	extra := rcLines(n-1, "          ", func(i int) string {
		return fmt.Sprintf("{name: r%d, addressPrefix: 10.%d.%d.0/24, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}", i, 100+i/256, i%256)
	})
	return []string{"nextHopIpAddress: 10.10.0.10}\n      - name: gw-rt\n", "nextHopIpAddress: 10.10.0.10}\n" + extra + "      - name: gw-rt\n"}
}

// hubSpaces gives the hub n address spaces in all.
func rcHubSpaces(n int) []string {
	var ps []string
	for i := 0; i < n-1; i++ {
		ps = append(ps, fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256))
	}
	return []string{"addressSpace: [10.10.0.0/24]\n        subnets:\n          - {name: nva,", "addressSpace: [10.10.0.0/24, " + strings.Join(ps, ", ") + "]\n        subnets:\n          - {name: nva,"}
}

var ruleCases = []ruleCase{
	// ER-01
	{rule: "ER-01", name: "provisioned circuit", want: nil},
	{rule: "ER-01", name: "not provisioned", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    provisioningState: NotProvisioned\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"}, want: []rcWant{{SevError, "circuits/er-hk"}}},
	{rule: "ER-01", name: "disabled", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    enabled: false\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"}, want: []rcWant{{SevError, "circuits/er-hk"}}},
	{rule: "ER-01", name: "no private peering", edits: []string{"    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30, secondaryPeerAddressPrefix: 172.16.0.4/30}\n", ""}, want: []rcWant{{SevError, "circuits/er-hk"}}},
	{rule: "ER-01", name: "unused circuit may be unprovisioned", edits: rcCat(rcTwoCircuits, rcAddCircuit("er-spare", "Singapore2", "Standard", 1000, "    provisioningState: NotProvisioned\n"))},

	// ER-02
	{rule: "ER-02", name: "same area", want: nil},
	{rule: "ER-02", name: "target region in another area", edits: []string{"{name: dst, region: southeastasia", "{name: dst, region: westeurope"}, want: []rcWant{{SevError, "dst/connections/hub-gw-asr-er-hk"}}, count: 1},
	{rule: "ER-02", name: "Premium crosses areas", edits: []string{"{name: dst, region: southeastasia", "{name: dst, region: westeurope", "tier: Standard\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "tier: Premium\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"}},
	{rule: "ER-02", name: "Local reaches only its metro", edits: []string{"tier: Standard\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "tier: Local\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"}, want: []rcWant{{SevError, "dst/connections/hub-gw-asr-er-hk"}}, count: 1},
	{rule: "ER-02", name: "unknown region is a note", edits: []string{"{name: dst, region: southeastasia", "{name: dst, region: marsnorth"}, want: []rcWant{{SevInfo, "dst/connections/hub-gw-asr-er-hk"}}},

	// ER-03
	{rule: "ER-03", name: "ten links on Standard", gen: func() []string { return rcGlobalReach(9) }},
	{rule: "ER-03", name: "eleven links on Standard", gen: func() []string { return rcGlobalReach(10) }, want: []rcWant{{SevError, "circuits/er-hk"}}},
	{rule: "ER-03", name: "source and pre-provisioned target count together", gen: func() []string { return rcCat(rcGlobalReach(9), rcPreConn) }, want: []rcWant{{SevError, "circuits/er-hk"}}},
	{rule: "ER-03", name: "Premium allows more", gen: func() []string {
		return rcCat(rcGlobalReach(12), []string{"tier: Standard\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "tier: Premium\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"})
	}},

	// ER-04
	{rule: "ER-04", name: "runbook keeps them apart", want: nil},
	{rule: "ER-04", name: "translated addressing may share the circuit", edits: rcTranslate},
	{rule: "ER-04", name: "pre-provisioned target on the source circuit", edits: rcPreConn, want: []rcWant{{SevError, "dst/connections/hub-gw-asr-hk"}}, count: 1},
	{rule: "ER-04", name: "two source hubs with overlapping spaces", edits: rcCat(
		rcAddVNet("      - name: hub2\n        addressSpace: [10.1.0.0/16]\n        subnets: [{name: GatewaySubnet, addressPrefix: 10.1.255.0/27}]\n"),
		rcAddGateway("{name: hub2-gw, virtualNetwork: hub2, type: ExpressRoute, sku: Standard}"),
		rcAddConnection("{name: hub2-gw-hk, gateway: hub2-gw, circuit: er-hk}")),
		want: []rcWant{{SevError, "src/connections/hub2-gw-hk"}}},

	// ER-05
	{rule: "ER-05", name: "two locations", edits: rcCat(rcAddCircuit("er-sg", "Singapore", "Standard", 1000, ""), rcAddConnection("{name: hub-gw-sg, gateway: hub-gw, circuit: er-sg}"))},
	{rule: "ER-05", name: "two circuits at one location", edits: rcCat(rcAddCircuit("er-hk-b", "Hong Kong", "Standard", 1000, ""), rcAddConnection("{name: hub-gw-hk-b, gateway: hub-gw, circuit: er-hk-b}")), want: []rcWant{{SevWarning, "src/hub-gw"}}},
	{rule: "ER-05", name: "five circuits at one location", gen: func() []string {
		var e []string
		for i := 0; i < 4; i++ {
			e = append(e, rcAddCircuit(fmt.Sprintf("er-hk%d", i), "Hong Kong", "Standard", 1000, "")...)
			e = append(e, rcAddConnection(fmt.Sprintf("{name: c%d, gateway: hub-gw, circuit: er-hk%d}", i, i))...)
		}
		return e
	}, want: []rcWant{{SevError, "src/hub-gw"}}},

	// ER-06
	{rule: "ER-06", name: "on-premises within budget", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    onPremisesPrefixCount: 4000\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"}},
	{rule: "ER-06", name: "on-premises over budget", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    onPremisesPrefixCount: 4001\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"}, want: []rcWant{{SevError, "circuits/er-hk"}}},
	{rule: "ER-06", name: "200 address spaces at creation", gen: func() []string { return rcHubSpaces(198) }},
	{rule: "ER-06", name: "201 address spaces at creation", gen: func() []string { return rcHubSpaces(199) }, want: []rcWant{{SevError, "dst/connections/hub-gw-asr-er-hk"}, {SevError, "src/connections/hub-gw-hk"}}, count: 2},

	// ER-07
	{rule: "ER-07", name: "peering /30s outside every VNet", want: nil},
	{rule: "ER-07", name: "peering /30 inside a spoke", edits: []string{"primaryPeerAddressPrefix: 172.16.0.0/30", "primaryPeerAddressPrefix: 10.1.0.0/30"}, want: []rcWant{{SevError, "circuits/er-hk"}}, count: 1},
	{rule: "ER-07", name: "peering /30 inside the translated target", edits: rcCat(rcTranslate, []string{"primaryPeerAddressPrefix: 172.16.0.0/30", "primaryPeerAddressPrefix: 10.17.0.0/30"}), want: []rcWant{{SevError, "circuits/er-hk"}}, count: 1},

	// ER-08
	{rule: "ER-08", name: "Global Reach in one area", edits: rcCat(rcAddCircuit("er-sg", "Singapore", "Standard", 1000, "    globalReach: [er-hk]\n"))},
	{rule: "ER-08", name: "Global Reach across areas on Standard", edits: rcCat(rcAddCircuit("er-ldn", "London", "Premium", 1000, "    globalReach: [er-hk]\n")), want: []rcWant{{SevError, "circuits/er-ldn"}}},
	{rule: "ER-08", name: "Global Reach across areas on Premium", edits: rcCat(rcAddCircuit("er-ldn", "London", "Premium", 1000, "    globalReach: [er-hk]\n"), []string{"tier: Standard\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "tier: Premium\n    bandwidthMbps: 1000\n    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"})},

	// ER-09
	{rule: "ER-09", name: "two locations", edits: rcTwoCircuits},
	{rule: "ER-09", name: "two facilities of one metro", edits: rcCat(rcAddCircuit("er-hk2", "Hong Kong2", "Standard", 1000, ""), rcTargetIn("er-hk2")), want: []rcWant{{SevWarning, "circuits/er-hk2"}}},

	// ER-10
	{rule: "ER-10", name: "single circuit", want: nil},
	{rule: "ER-10", name: "two circuits, same IPs, no preference", edits: rcTwoCircuits, want: []rcWant{{SevWarning, "dst/connections/hub-gw-asr-er-sg"}}, count: 1},
	{rule: "ER-10", name: "two circuits, translated", edits: rcCat(rcTwoCircuits, rcTranslate)},
	{rule: "ER-10", name: "two circuits, target pre-provisioned with a higher weight", edits: rcCat(rcTwoCircuits, rcTarget(rcPreHub+"    connections:\n      - {name: hub-gw-asr-sg, gateway: hub-gw-asr, circuit: er-sg, routingWeight: 100}\n"))},

	// ER-11
	{rule: "ER-11", name: "equal bandwidth", edits: rcTwoCircuits},
	{rule: "ER-11", name: "thinner standby", edits: rcCat(rcAddCircuit("er-sg", "Singapore", "Standard", 500, ""), rcTargetIn("er-sg")), want: []rcWant{{SevWarning, "circuits/er-sg"}}},
	{rule: "ER-11", name: "raise planned", edits: rcCat(rcAddCircuit("er-sg", "Singapore", "Standard", 500, ""), []string{"connectivity: {circuits: [er-hk]}", "connectivity: {circuits: [er-sg], raiseBandwidthMbps: 1000}"})},
	{rule: "ER-11", name: "raise would lower", edits: rcCat(rcAddCircuit("er-sg", "Singapore", "Standard", 500, ""), []string{"connectivity: {circuits: [er-hk]}", "connectivity: {circuits: [er-sg], raiseBandwidthMbps: 200}"}), want: []rcWant{{SevWarning, "circuits/er-sg"}}},

	// ER-12
	{rule: "ER-12", name: "same subscription", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    subscriptionId: sub-a\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}", "{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk, subscriptionId: sub-a}"}},
	{rule: "ER-12", name: "across subscriptions without a key", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    subscriptionId: sub-a\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}", "{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk, subscriptionId: sub-b}"}, want: []rcWant{{SevError, "src/connections/hub-gw-hk"}}},
	{rule: "ER-12", name: "across subscriptions with a key", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    subscriptionId: sub-a\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}", "{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk, subscriptionId: sub-b, authorizationKey: key-1}"}},
	{rule: "ER-12", name: "target site in another subscription", edits: []string{"    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    subscriptionId: sub-a\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "{name: dst, region: southeastasia, provider: netlab}", "{name: dst, region: southeastasia, provider: azure, azure: {subscriptionId: sub-b, resourceGroup: dr}}"}, want: []rcWant{{SevError, "dst/connections/hub-gw-asr-er-hk"}}},
	{rule: "ER-12", name: "a key redeemed twice", edits: rcCat(rcAddCircuit("er-sg", "Singapore", "Standard", 1000, ""), rcAddConnection("{name: hub-gw-sg, gateway: hub-gw, circuit: er-sg, authorizationKey: key-1}"), []string{"{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}", "{name: hub-gw-hk, gateway: hub-gw, circuit: er-hk, authorizationKey: key-1}"}), want: []rcWant{{SevError, "src/connections/hub-gw-sg"}}},

	// GW-01
	{rule: "GW-01", name: "/27 GatewaySubnet", want: nil},
	{rule: "GW-01", name: "/28 GatewaySubnet", edits: []string{"{name: GatewaySubnet, addressPrefix: 10.10.0.128/27", "{name: GatewaySubnet, addressPrefix: 10.10.0.128/28"}, want: []rcWant{{SevError, "src/hub/subnets/GatewaySubnet"}}, count: 1},
	{rule: "GW-01", name: "misnamed GatewaySubnet", edits: []string{"{name: GatewaySubnet, addressPrefix", "{name: gatewaysubnet, addressPrefix"}, want: []rcWant{{SevError, "src/hub/subnets/gatewaysubnet"}}, count: 1},
	{rule: "GW-01", name: "no GatewaySubnet", edits: []string{"          - {name: GatewaySubnet, addressPrefix: 10.10.0.128/27, routeTable: gw-rt}\n", ""}, want: []rcWant{{SevError, "src/hub"}}},

	// GW-02
	{rule: "GW-02", name: "clean GatewaySubnet", want: nil},
	{rule: "GW-02", name: "NSG on GatewaySubnet", edits: []string{"routeTable: gw-rt}", "routeTable: gw-rt, networkSecurityGroup: nsg1}"}, want: []rcWant{{SevError, "src/hub/subnets/GatewaySubnet"}}, count: 1},
	{rule: "GW-02", name: "default route on GatewaySubnet", edits: []string{"      - name: gw-rt\n        routes:\n", "      - name: gw-rt\n        routes:\n          - {name: default, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}\n"}, want: []rcWant{{SevError, "src/routeTables/gw-rt/routes/default"}}, count: 1},
	{rule: "GW-02", name: "BGP propagation off", edits: []string{"      - name: gw-rt\n", "      - name: gw-rt\n        disableBgpRoutePropagation: true\n"}, want: []rcWant{{SevError, "src/hub/subnets/GatewaySubnet"}}, count: 1},

	// GW-03
	{rule: "GW-03", name: "one ExpressRoute and one VPN gateway", edits: rcAddGateway("{name: hub-vpn, virtualNetwork: hub, type: Vpn, sku: VpnGw1}")},
	{rule: "GW-03", name: "two ExpressRoute gateways", edits: rcAddGateway("{name: hub-gw2, virtualNetwork: hub, type: ExpressRoute, sku: Standard}"), want: []rcWant{{SevError, "src/hub"}}, count: 1},

	// GW-04
	{rule: "GW-04", name: "same SKU", want: nil},
	{rule: "GW-04", name: "larger SKU", edits: []string{"connectivity: {circuits: [er-hk]}", "connectivity: {circuits: [er-hk], gatewaySku: ErGw3AZ}"}},
	{rule: "GW-04", name: "smaller SKU", edits: []string{"type: ExpressRoute, sku: Standard}", "type: ExpressRoute, sku: HighPerformance}", "connectivity: {circuits: [er-hk]}", "connectivity: {circuits: [er-hk], gatewaySku: Standard}"}, want: []rcWant{{SevWarning, "dst/hub-gw-asr"}}},
	{rule: "GW-04", name: "smaller SKU cannot learn the routes", edits: []string{"type: ExpressRoute, sku: Standard}", "type: ExpressRoute, sku: HighPerformance}", "connectivity: {circuits: [er-hk]}", "connectivity: {circuits: [er-hk], gatewaySku: Standard}", "    onPremises: hq\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30", "    onPremises: hq\n    onPremisesPrefixCount: 5000\n    privatePeering: {primaryPeerAddressPrefix: 172.16.0.0/30"}, want: []rcWant{{SevError, "dst/hub-gw-asr"}}, count: 1},

	// GW-05
	{rule: "GW-05", name: "Standard public IP", want: nil},
	{rule: "GW-05", name: "Basic public IP", edits: []string{"type: ExpressRoute, sku: Standard}", "type: ExpressRoute, sku: Standard, publicIpSku: Basic}"}, want: []rcWant{{SevError, "src/hub-gw"}}, count: 1},

	// GW-06
	{rule: "GW-06", name: "built before failover", want: nil},
	{rule: "GW-06", name: "built during failover", edits: []string{"connectivity: {circuits: [er-hk]}", "connectivity: {circuits: [er-hk], provisionBeforeFailover: false}"}, want: []rcWant{{SevWarning, "dst/hub-gw-asr"}}},
	{rule: "GW-06", name: "pre-provisioned gateway", edits: rcTarget(rcPreHub)},
	{rule: "GW-06", name: "declared but not provisioned", edits: rcTarget(strings.Replace(rcPreHub, "sku: Standard}", "sku: Standard, provisioned: false}", 1)), want: []rcWant{{SevWarning, "dst/hub-gw-asr"}}},

	// GW-07
	{rule: "GW-07", name: "few peerings", want: nil},
	{rule: "GW-07", name: "501 peerings on the hub", gen: func() []string { return rcManyPeerings("hub", 501) }, want: []rcWant{{SevError, "src/hub"}}, count: 1},
	{rule: "GW-07", name: "501 peerings on a VNet without gateway", gen: func() []string { return rcManyPeerings("spoke1", 501) }},

	// PE-01
	{rule: "PE-01", name: "disjoint peers", want: nil},
	{rule: "PE-01", name: "overlapping peers", edits: rcCat(rcAddVNet("      - {name: dup, addressSpace: [10.1.0.0/16]}\n"), rcAddPeering("{name: spoke1-to-dup, from: spoke1, to: dup, allowVirtualNetworkAccess: true}"), rcAddPeering("{name: dup-to-spoke1, from: dup, to: spoke1, allowVirtualNetworkAccess: true}")), want: []rcWant{{SevError, "src/spoke1/peerings/spoke1-to-dup"}, {SevError, "src/dup/peerings/dup-to-spoke1"}}, count: 2},

	// PE-02
	{rule: "PE-02", name: "hub peers disjoint spokes", want: nil},
	{rule: "PE-02", name: "hub peers two overlapping spokes", edits: rcCat(rcAddVNet("      - {name: dup, addressSpace: [10.1.0.0/24]}\n"), rcAddPeering("{name: hub-to-dup, from: hub, to: dup, allowVirtualNetworkAccess: true}"), rcAddPeering("{name: dup-to-hub, from: dup, to: hub, allowVirtualNetworkAccess: true}")), want: []rcWant{{SevError, "src/hub"}}, count: 1},
	{rule: "PE-02", name: "target hub peers a source spoke and its replica", edits: rcTarget("    virtualNetworks:\n      - name: hub-asr\n        addressSpace: [10.10.0.0/24]\n        subnets: [{name: GatewaySubnet, addressPrefix: 10.10.0.128/27}]\n    peerings:\n      - {name: hub-to-src-spoke1, from: hub-asr, to: src/spoke1, allowVirtualNetworkAccess: true}\n"), want: []rcWant{{SevError, "dst/hub-asr"}}},

	// PE-03
	{rule: "PE-03", name: "hub allows transit", want: nil},
	{rule: "PE-03", name: "no gateway transit back", edits: []string{"{name: hub-to-spoke1, from: hub, to: spoke1, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, allowGatewayTransit: true}", "{name: hub-to-spoke1, from: hub, to: spoke1, allowVirtualNetworkAccess: true, allowForwardedTraffic: true}"}, want: []rcWant{{SevError, "src/spoke1/peerings/spoke1-to-hub"}}, count: 1},
	{rule: "PE-03", name: "spoke has its own gateway", edits: rcCat([]string{"{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}", "{name: app, addressPrefix: 10.1.0.0/25, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}\n          - {name: GatewaySubnet, addressPrefix: 10.1.0.224/27}"}, rcAddGateway("{name: spoke1-vpn, virtualNetwork: spoke1, type: Vpn, sku: VpnGw1}")), want: []rcWant{{SevError, "src/spoke1/peerings/spoke1-to-hub"}}},
	{rule: "PE-03", name: "remote VNet without gateway", edits: rcCat(rcAddVNet("      - {name: hub2, addressSpace: [10.20.0.0/24]}\n"), rcAddPeering("{name: spoke2-to-hub2, from: spoke2, to: hub2, allowVirtualNetworkAccess: true, useRemoteGateways: true}"), rcAddPeering("{name: hub2-to-spoke2, from: hub2, to: spoke2, allowVirtualNetworkAccess: true, allowGatewayTransit: true}")), want: []rcWant{{SevError, "src/spoke2/peerings/spoke2-to-hub2"}, {SevError, "src/spoke2/peerings/spoke2-to-hub"}}},

	// PE-04
	{rule: "PE-04", name: "both directions", want: nil},
	{rule: "PE-04", name: "one direction only", edits: []string{"      - {name: hub-to-spoke2, from: hub, to: spoke2, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, allowGatewayTransit: true}\n", ""}, want: []rcWant{{SevError, "src/spoke2/peerings/spoke2-to-hub"}}, count: 1},

	// PE-05
	{rule: "PE-05", name: "generated peerings copy the flags", want: nil},
	{rule: "PE-05", name: "pre-provisioned peering differs", edits: rcTarget("    virtualNetworks:\n      - name: hub-asr\n        addressSpace: [10.10.0.0/24]\n        subnets: [{name: GatewaySubnet, addressPrefix: 10.10.0.128/27}]\n      - name: spoke1-asr\n        addressSpace: [10.1.0.0/24]\n        subnets: [{name: app, addressPrefix: 10.1.0.0/24}]\n    peerings:\n      - {name: spoke1-to-hub, from: spoke1-asr, to: hub-asr, allowVirtualNetworkAccess: true, useRemoteGateways: true}\n"), want: []rcWant{{SevWarning, "dst/spoke1-asr/peerings/spoke1-to-hub"}}, count: 1},

	// PE-06
	{rule: "PE-06", name: "spokes talk through the hub appliance", want: nil},
	{rule: "PE-06", name: "no spoke routes: no transit intended", edits: []string{"routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}\n      - name: spoke2", "serviceEndpoints: [Microsoft.Storage]}\n      - name: spoke2", "{name: app, addressPrefix: 10.2.0.0/24, routeTable: spoke-rt, ", "{name: app, addressPrefix: 10.2.0.0/24, "}},
	{rule: "PE-06", name: "spoke refuses forwarded traffic", edits: []string{"{name: spoke2-to-hub, from: spoke2, to: hub, allowVirtualNetworkAccess: true, allowForwardedTraffic: true,", "{name: spoke2-to-hub, from: spoke2, to: hub, allowVirtualNetworkAccess: true,"}, want: []rcWant{{SevError, "src/spoke2/peerings/spoke2-to-hub"}}, count: 1},
	{rule: "PE-06", name: "other spoke has no way back", edits: []string{"{name: app, addressPrefix: 10.2.0.0/24, routeTable: spoke-rt, ", "{name: app, addressPrefix: 10.2.0.0/24, "}, want: []rcWant{{SevError, "src/spoke2/subnets/app"}}, count: 1},

	// PE-07
	{rule: "PE-07", name: "few peerings", want: nil},
	{rule: "PE-07", name: "501 peerings on a VNet", gen: func() []string { return rcManyPeerings("spoke1", 501) }, want: []rcWant{{SevError, "src/spoke1"}}, count: 1},

	// RT-01
	{rule: "RT-01", name: "next hop is the hub appliance", want: nil},
	{rule: "RT-01", name: "translated next hops", edits: rcTranslate},
	{rule: "RT-01", name: "next hop is no appliance", edits: []string{"{name: default-via-nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}", "{name: default-via-nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.11}"}, want: []rcWant{{SevError, "src/routeTables/spoke-rt/routes/default-via-nva"}}, count: 1},
	{rule: "RT-01", name: "appliance not reached directly", edits: rcCat(rcAddVNet("      - name: iso\n        addressSpace: [10.50.0.0/24]\n        subnets: [{name: nva, addressPrefix: 10.50.0.0/24}]\n"), []string{"    appliances:\n", "    appliances:\n      - {name: iso-nva, virtualNetwork: iso, subnet: nva, ipAddress: 10.50.0.4}\n", "{name: default-via-nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}", "{name: default-via-nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.50.0.4}"}), want: []rcWant{{SevError, "src/routeTables/spoke-rt/routes/default-via-nva"}}},
	{rule: "RT-01", name: "untranslated next hop in a pre-provisioned table", edits: rcCat(rcTranslate, rcTarget("    virtualNetworks: []\n    routeTables:\n      - name: spoke-rt-asr\n        routes: [{name: default-via-nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}]\n")), want: []rcWant{{SevError, "dst/routeTables/spoke-rt-asr/routes/default-via-nva"}}},

	// RT-02
	{rule: "RT-02", name: "appliance routes only", want: nil},
	{rule: "RT-02", name: "gateway route behind ExpressRoute", edits: []string{"        routes:\n          - {name: default-via-nva", "        routes:\n          - {name: onprem, addressPrefix: 192.168.0.0/16, nextHopType: VirtualNetworkGateway}\n          - {name: default-via-nva"}, want: []rcWant{{SevError, "src/routeTables/spoke-rt/routes/onprem"}}, count: 1},
	{rule: "RT-02", name: "next hop address without an appliance", edits: []string{"        routes:\n          - {name: default-via-nva", "        routes:\n          - {name: web, addressPrefix: 8.8.8.0/24, nextHopType: Internet, nextHopIpAddress: 10.10.0.10}\n          - {name: default-via-nva"}, want: []rcWant{{SevError, "src/routeTables/spoke-rt/routes/web"}}, count: 1},

	// RT-03
	{rule: "RT-03", name: "appliance subnet without routes", want: nil},
	{rule: "RT-03", name: "appliance subnet routes to itself", edits: []string{"{name: nva, addressPrefix: 10.10.0.0/25}", "{name: nva, addressPrefix: 10.10.0.0/25, routeTable: spoke-rt}"}, want: []rcWant{{SevWarning, "src/routeTables/spoke-rt/routes/default-via-nva"}}, count: 1},

	// RT-04
	{rule: "RT-04", name: "400 routes", gen: func() []string { return rcManyRoutes(400) }},
	{rule: "RT-04", name: "401 routes", gen: func() []string { return rcManyRoutes(401) }, want: []rcWant{{SevError, "src/routeTables/spoke-rt"}}, count: 1},

	// RT-05
	{rule: "RT-05", name: "storage endpoint", want: nil},
	{rule: "RT-05", name: "default through the appliance without endpoint", edits: []string{"{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}", "{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt}"}, want: []rcWant{{SevWarning, "src/spoke1/subnets/app"}}, count: 1},
	{rule: "RT-05", name: "default to the Internet without endpoint", edits: []string{"{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}", "{name: app, addressPrefix: 10.1.0.0/24}"}},
	{rule: "RT-05", name: "forced tunnelling from on-premises", edits: []string{"{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}", "{name: app, addressPrefix: 10.1.0.0/24}", "addressSpace: [192.168.0.0/16]", "addressSpace: [192.168.0.0/16, 0.0.0.0/0]"}, want: []rcWant{{SevWarning, "src/spoke1/subnets/app"}}},

	// RT-06
	{rule: "RT-06", name: "checks reach their services", want: nil},
	{rule: "RT-06", name: "check to an address nobody has", edits: []string{"http://10.1.0.4:8080/health", "http://10.1.0.99:8080/health"}, want: []rcWant{{SevWarning, "app/frontend/post[0]"}}, count: 1},
	{rule: "RT-06", name: "route None on the way", edits: []string{"      - name: gw-rt\n        routes:\n", "      - name: gw-rt\n        routes:\n          - {name: block, addressPrefix: 10.2.0.4/32, nextHopType: None}\n"}, want: []rcWant{{SevWarning, "app/backend/post[0]"}}, count: 1},
	{rule: "RT-06", name: "check by name is a note", edits: []string{"http://10.1.0.4:8080/health", "http://app1.example:8080/health"}, want: []rcWant{{SevInfo, "app/frontend/post[0]"}}},

	// RT-07
	{rule: "RT-07", name: "translated tables", edits: rcTranslate},
	{rule: "RT-07", name: "stale appliance and prefix", edits: rcCat(rcTranslate, rcTarget("    virtualNetworks: []\n    routeTables:\n      - name: spoke-rt-asr\n        routes:\n          - {name: default-via-nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.10.0.10}\n          - {name: to-spoke2, addressPrefix: 10.2.0.0/24, nextHopType: VirtualAppliance, nextHopIpAddress: 10.26.0.10}\n")), want: []rcWant{{SevWarning, "dst/routeTables/spoke-rt-asr/routes/default-via-nva"}, {SevWarning, "dst/routeTables/spoke-rt-asr/routes/to-spoke2"}}, count: 2},

	// AS-01
	{rule: "AS-01", name: "every protected VNet mapped", want: nil},
	{rule: "AS-01", name: "untranslatable VNet", edits: []string{"addressing: same", "addressing: translate\n    addressTranslation: [{from: 10.10.0.0/24, to: 10.26.0.0/24}, {from: 10.2.0.0/24, to: 10.18.0.0/24}]"}, want: []rcWant{{SevError, "src/spoke1"}}},
	{rule: "AS-01", name: "two source VNets map onto one", edits: []string{
		"  - {name: dst, region: southeastasia, provider: netlab}\n", "  - {name: dst, region: southeastasia, provider: netlab}\n  - {name: src2, region: eastasia, provider: netlab}\n",
		"  - site: dst\n", "  - site: src2\n    virtualNetworks:\n      - name: spoke1\n        addressSpace: [10.3.0.0/24]\n        subnets: [{name: app, addressPrefix: 10.3.0.0/24}]\n  - site: dst\n",
		"recovery:\n", "    - name: app3\n      site: src2\n      policy: p\n      nics: [{virtualNetwork: spoke1, subnet: app, ipAddress: 10.3.0.4}]\n      disks: [{name: os, size: 64MiB}]\nrecovery:\n",
	}, want: []rcWant{{SevError, "dst/spoke1-asr"}}},

	// AS-02
	{rule: "AS-02", name: "generated subnets keep their names", want: nil},
	{rule: "AS-02", name: "pre-provisioned VNet lacks the subnet", edits: rcTarget("    virtualNetworks:\n      - name: spoke1-asr\n        addressSpace: [10.1.0.0/24]\n        subnets: [{name: web, addressPrefix: 10.1.0.0/25}, {name: data, addressPrefix: 10.1.0.128/25}]\n"), want: []rcWant{{SevWarning, "dst/spoke1-asr"}}, count: 1},

	// AS-03
	{rule: "AS-03", name: "addresses free", want: nil},
	{rule: "AS-03", name: "address taken by a pre-provisioned appliance", edits: rcTarget("    virtualNetworks:\n      - name: spoke1-asr\n        addressSpace: [10.1.0.0/24]\n        subnets: [{name: app, addressPrefix: 10.1.0.0/24}]\n    appliances:\n      - {name: fw, virtualNetwork: spoke1-asr, subnet: app, ipAddress: 10.1.0.4}\n"), want: []rcWant{{SevWarning, "src/app1/nics/0"}}, count: 1},
	{rule: "AS-03", name: "address outside the target subnet", edits: rcTarget("    virtualNetworks:\n      - name: spoke1-asr\n        addressSpace: [10.1.0.0/24]\n        subnets: [{name: app, addressPrefix: 10.1.0.128/25}]\n"), want: []rcWant{{SevWarning, "src/app1/nics/0"}}, count: 1},

	// AS-04
	{rule: "AS-04", name: "isolated translated test network", want: nil},
	{rule: "AS-04", name: "connected test network with its own addresses", edits: []string{"testNetwork: {addressPool: 172.30.0.0/16}", "testNetwork: {addressPool: 172.30.0.0/16, connectToCircuit: true}"}},
	{rule: "AS-04", name: "test network named like the target", edits: []string{"    addressing: same\n", "    addressing: same\n    targetNames: {suffix: -test}\n"}, want: []rcWant{{SevError, "dst/spoke1-test"}}},
	{rule: "AS-04", name: "connected test network with the same IPs", edits: []string{"testNetwork: {addressPool: 172.30.0.0/16}", "testNetwork: {addressing: same, connectToCircuit: true}"}, want: []rcWant{{SevError, "dst/spoke1-test"}, {SevError, "dst/hub-test"}}},
	{rule: "AS-04", name: "test pool too small", edits: []string{"addressPool: 172.30.0.0/16", "addressPool: 172.30.0.0/24"}, want: []rcWant{{SevError, "src/spoke2"}}},

	// AS-05
	{rule: "AS-05", name: "runbook disconnects first", want: nil},
	{rule: "AS-05", name: "same circuit, translated", edits: rcTranslate},
	{rule: "AS-05", name: "pre-provisioned target connection", edits: rcPreConn, want: []rcWant{{SevError, "dst/connections/hub-gw-asr-hk"}}, count: 1},

	// AS-06
	{rule: "AS-06", name: "everything in the runbook", want: nil},
	{rule: "AS-06", name: "source VPN gateway has no counterpart", edits: rcAddGateway("{name: hub-vpn, virtualNetwork: hub, type: Vpn, sku: VpnGw1}"), want: []rcWant{{SevWarning, "src/hub-vpn"}}, count: 1},
	{rule: "AS-06", name: "pre-provisioned gateway never built", edits: rcTarget(strings.Replace(rcPreHub, "sku: Standard}", "sku: Standard, provisioned: false}", 1)), want: []rcWant{{SevWarning, "dst/hub-gw-asr"}}, count: 1},
}

func (rc ruleCase) text(t testing.TB) string {
	e := rc.edits
	if rc.gen != nil {
		e = rc.gen()
	}
	return rcEdit(t, e)
}

func TestRules(t *testing.T) {
	for _, rc := range ruleCases {
		t.Run(rc.rule+"/"+rc.name, func(t *testing.T) {
			p := rcLoad(t, rc.text(t))
			fs := CheckRule(p, rc.rule)
			for _, f := range fs {
				if f.Rule != rc.rule {
					t.Errorf("finding of rule %s from CheckRule(%s): %+v", f.Rule, rc.rule, f)
				}
				rcWellFormed(t, f)
			}
			if len(rc.want) == 0 {
				for _, f := range fs {
					t.Errorf("want no finding, got %s %s %s: %s", f.Severity, f.Scope, f.Resource, f.Message)
				}
				return
			}
			for _, w := range rc.want {
				if !slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == w.sev && f.Resource == w.resource }) {
					t.Errorf("want %s on %s, got:\n%s", w.sev, w.resource, rcDump(fs))
				}
			}
			if rc.count > 0 && len(fs) != rc.count {
				t.Errorf("want %d findings, got %d:\n%s", rc.count, len(fs), rcDump(fs))
			}
		})
	}
}

func rcWellFormed(t *testing.T, f Finding) {
	t.Helper()
	if f.Resource == "" || f.Message == "" || f.Hint == "" {
		t.Errorf("finding lacks a resource, message or hint: %+v", f)
	}
	if !slices.Contains([]string{SevError, SevWarning, SevInfo}, f.Severity) {
		t.Errorf("bad severity %q: %+v", f.Severity, f)
	}
	if !slices.Contains([]string{ScopeSource, ScopeTarget, ScopeFailover, ScopeTest}, f.Scope) {
		t.Errorf("bad scope %q: %+v", f.Scope, f)
	}
	if strings.Contains(f.Message, "%!") || strings.Contains(f.Hint, "%!") {
		t.Errorf("bad format: %+v", f)
	}
}

func rcDump(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s %s [%s] %s: %s\n", f.Rule, f.Severity, f.Scope, f.Resource, f.Message)
	}
	if len(fs) == 0 {
		b.WriteString("  (none)\n")
	}
	return b.String()
}

// TestRulesComplete fails when a rule of network-rules.md is missing, or
// has no case that makes it fire and none that keeps it quiet.
func TestRulesComplete(t *testing.T) {
	var got []string
	for _, r := range Rules() {
		got = append(got, r.ID)
		if r.Title == "" || r.check == nil {
			t.Errorf("rule %s has no title or check", r.ID)
		}
		if !slices.Contains([]string{SevError, SevWarning}, r.Severity) {
			t.Errorf("rule %s: severity %q", r.ID, r.Severity)
		}
		if !slices.Contains([]string{ScopeSource, ScopeTarget, ScopeFailover, ScopeTest}, r.Scope) {
			t.Errorf("rule %s: scope %q", r.ID, r.Scope)
		}
	}
	if !slices.Equal(got, ruleIDs) {
		t.Errorf("Rules() = %v\nwant      %v", got, ruleIDs)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, rc := range ruleCases {
		if len(rc.want) > 0 {
			fires[rc.rule] = true
		} else {
			quiet[rc.rule] = true
		}
	}
	for _, id := range ruleIDs {
		if !fires[id] {
			t.Errorf("rule %s has no test case that makes it fire", id)
		}
		if !quiet[id] {
			t.Errorf("rule %s has no test case that keeps it quiet", id)
		}
	}
}

// TestBaseSpecIsClean: the base of the rule cases passes every rule, so
// that each case's findings come from its edit.
func TestBaseSpecIsClean(t *testing.T) {
	if fs := Check(rcLoad(t, rcBase)); len(fs) > 0 {
		t.Errorf("the base spec has findings:\n%s", rcDump(fs))
	}
}

// TestExamples: the example specs have no error finding.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			s, err := spec.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			fs := Check(Derive(s))
			t.Logf("%s:\n%s", filepath.Base(f), rcDump(fs))
			for _, x := range fs {
				rcWellFormed(t, x)
			}
			switch filepath.Base(f) {
			case "hub-spoke-two-circuits.yaml", "local-quickstart.yaml", "single-circuit-same-ip.yaml":
				if HasErrors(fs) {
					t.Errorf("want no error finding, got:\n%s", rcDump(fs))
				}
			}
		})
	}
}

// TestCheckIsOrderFree: the same spec with its lists in another order
// gives the same findings.
func TestCheckIsOrderFree(t *testing.T) {
	a := rcLoad(t, rcEdit(t, rcCat(rcTwoCircuits, []string{"{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}", "{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt}"})))
	swapped := strings.Replace(rcBase, "      - {name: spoke1-to-hub, from: spoke1, to: hub, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, useRemoteGateways: true}\n      - {name: hub-to-spoke1, from: hub, to: spoke1, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, allowGatewayTransit: true}\n",
		"      - {name: hub-to-spoke1, from: hub, to: spoke1, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, allowGatewayTransit: true}\n      - {name: spoke1-to-hub, from: spoke1, to: hub, allowVirtualNetworkAccess: true, allowForwardedTraffic: true, useRemoteGateways: true}\n", 1)
	if swapped == rcBase {
		t.Fatal("swap did not apply")
	}
	s := swapped
	for i := 0; i < len(rcTwoCircuits); i += 2 {
		s = strings.Replace(s, rcTwoCircuits[i], rcTwoCircuits[i+1], 1)
	}
	s = strings.Replace(s, "{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt, serviceEndpoints: [Microsoft.Storage]}", "{name: app, addressPrefix: 10.1.0.0/24, routeTable: spoke-rt}", 1)
	b := rcLoad(t, s)
	fa, fb := Check(a), Check(b)
	key := func(fs []Finding) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Rule+" "+f.Resource+" "+f.Message)
		}
		sort.Strings(out)
		return out
	}
	if !slices.Equal(key(fa), key(fb)) {
		t.Errorf("findings differ with list order:\n%s---\n%s", rcDump(fa), rcDump(fb))
	}
	if len(fa) == 0 {
		t.Error("the variant should have findings to compare")
	}
}

// TestCheckSparseSpecs: specs with parts missing (no recovery, no hub, no
// target network, no circuits) are checked without a panic.
func TestCheckSparseSpecs(t *testing.T) {
	specs := map[string]string{
		"one site only":     "version: 1\nname: min\nsites: [{name: a, region: eastasia, provider: local}]\n",
		"no gateway":        rcEdit(t, []string{"    gateways:\n      - {name: hub-gw, virtualNetwork: hub, type: ExpressRoute, sku: Standard}\n    connections:\n      - {name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}\n", ""}),
		"no target network": rcEdit(t, []string{"  - site: dst\n    virtualNetworks: []\n", ""}),
		"no circuits":       rcEdit(t, []string{"    connections:\n      - {name: hub-gw-hk, gateway: hub-gw, circuit: er-hk}\n", "", "connectivity: {circuits: [er-hk]}", "connectivity: {}"}),
		"no plans":          strings.Split(rcBase, "  plans:\n")[0],
	}
	for name, text := range specs {
		t.Run(name, func(t *testing.T) {
			fs := Check(rcLoad(t, text))
			for _, f := range fs {
				rcWellFormed(t, f)
			}
			t.Logf("\n%s", rcDump(fs))
		})
	}
}

// TestRunbookRules: AS-05 and AS-06 guard the runbook itself; a runbook
// edited to break an ordering or drop an action makes them fire.
func TestRunbookRules(t *testing.T) {
	cases := []struct {
		name, rule string
		change     func(rb []Action) []Action
		want       rcWant
	}{
		{"target connects without waiting", "AS-05", func(rb []Action) []Action {
			for i := range rb {
				if rb[i].Action == ActCreateConn && rb[i].Phase == PhaseFailover {
					rb[i].DependsOn = nil
				}
			}
			return rb
		}, rcWant{SevError, "dst/connections/hub-gw-asr-er-hk"}},
		{"disconnect failure not handled", "AS-05", func(rb []Action) []Action {
			for i := range rb {
				if rb[i].Action == ActDeleteConn && rb[i].Phase == PhaseFailover {
					rb[i].OnFailure = ""
				}
			}
			return rb
		}, rcWant{SevError, "src/connections/hub-gw-hk"}},
		{"source never disconnected", "AS-05", func(rb []Action) []Action {
			return slices.DeleteFunc(rb, func(a Action) bool { return a.Action == ActDeleteConn && a.Phase == PhaseFailover })
		}, rcWant{SevError, "src/connections/hub-gw-hk"}},
		{"failback reconnects first", "AS-05", func(rb []Action) []Action {
			return slices.DeleteFunc(rb, func(a Action) bool { return a.Action == ActDeleteConn && a.Phase == PhaseFailback })
		}, rcWant{SevError, "dst/connections/hub-gw-asr-er-hk"}},
		{"route table not in the runbook", "AS-06", func(rb []Action) []Action {
			return slices.DeleteFunc(rb, func(a Action) bool { return a.Action == ActCreateRT && a.Resource == "dst/routeTables/spoke-rt-asr" })
		}, rcWant{SevWarning, "dst/routeTables/spoke-rt-asr"}},
		{"association not in the runbook", "AS-06", func(rb []Action) []Action {
			return slices.DeleteFunc(rb, func(a Action) bool { return a.Action == ActAssociateRT && a.Resource == "dst/spoke1-asr/subnets/app" })
		}, rcWant{SevWarning, "dst/spoke1-asr/subnets/app"}},
		{"peering without a duration", "AS-06", func(rb []Action) []Action {
			for i := range rb {
				if rb[i].Action == ActCreatePeering {
					rb[i].Estimate.Duration = 0
				}
			}
			return rb
		}, rcWant{SevWarning, "dst/hub-asr/peerings/hub-to-spoke1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := rcLoad(t, rcBase)
			if fs := CheckRule(p, tc.rule); len(fs) > 0 {
				t.Fatalf("the generated runbook already fails %s:\n%s", tc.rule, rcDump(fs))
			}
			p.Runbook = tc.change(slices.Clone(p.Runbook))
			fs := CheckRule(p, tc.rule)
			if !slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == tc.want.sev && f.Resource == tc.want.resource }) {
				t.Errorf("want %s on %s, got:\n%s", tc.want.sev, tc.want.resource, rcDump(fs))
			}
		})
	}
}
