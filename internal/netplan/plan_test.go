package netplan

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// planSpecs are the specs with golden plans: the repository's examples and
// the variants in testdata.
func planSpecs(t *testing.T) []string {
	t.Helper()
	ex, _ := filepath.Glob("../../examples/*.yaml")
	vs, _ := filepath.Glob("testdata/*.yaml")
	all := append(ex, vs...)
	if len(all) < 6 {
		t.Fatalf("want the three examples and three variants, found %v", all)
	}
	return all
}

func mustDerive(t *testing.T, file string) *Plan {
	t.Helper()
	s, err := spec.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	return Derive(s)
}

func TestPlanGolden(t *testing.T) {
	for _, f := range planSpecs(t) {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			p := mustDerive(t, f)
			got, err := json.MarshalIndent(p, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", "golden", name+".plan.json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/netplan -run TestPlanGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("plan of %s differs from %s; review with -update and git diff", f, golden)
			}
		})
	}
}

func TestTopologies(t *testing.T) {
	cases := []struct {
		file       string
		kind       string
		addressing string
		crossGeo   bool
	}{
		{"../../examples/hub-spoke-two-circuits.yaml", TwoCircuitsTwoLocations, "same", false},
		{"../../examples/single-circuit-same-ip.yaml", SingleCircuit, "same", false},
		{"../../examples/local-quickstart.yaml", TwoCircuitsTwoLocations, "same", false},
		{"testdata/translated.yaml", TwoCircuitsTwoLocations, "translate", false},
		{"testdata/two-circuits-one-location.yaml", TwoCircuitsOneLocation, "same", false},
		{"testdata/cross-geography.yaml", SingleCircuit, "same", true},
	}
	for _, c := range cases {
		p := mustDerive(t, c.file)
		if p.Topology.Kind != c.kind || p.Topology.Addressing != c.addressing || p.Topology.CrossGeography != c.crossGeo {
			t.Errorf("%s: topology %+v, want kind %s addressing %s crossGeography %v", c.file, p.Topology, c.kind, c.addressing, c.crossGeo)
		}
		if len(p.Problems) > 0 {
			t.Errorf("%s: generation problems: %+v", c.file, p.Problems)
		}
	}
}

// index returns the position of the first action matching, or -1.
func index(rb []Action, action, resourceSuffix string) int {
	for i, a := range rb {
		if a.Action == action && strings.HasSuffix(a.Resource, resourceSuffix) && a.Phase != PhaseFailback {
			return i
		}
	}
	return -1
}

// checkOrder verifies that every dependency comes earlier in the list and
// that the named actions come in the given order.
func checkValidOrder(t *testing.T, rb []Action) {
	t.Helper()
	pos := map[string]int{}
	for i, a := range rb {
		if _, dup := pos[a.ID]; dup {
			t.Errorf("duplicate action id %s", a.ID)
		}
		pos[a.ID] = i
		for _, d := range a.DependsOn {
			if j, ok := pos[d]; !ok || j >= i {
				t.Errorf("action %s depends on %s, which does not come before it", a.ID, d)
			}
		}
	}
}

// dependsOnTransitively reports whether a waits for b.
func dependsOnTransitively(rb []Action, a, b string) bool {
	byID := map[string]Action{}
	for _, x := range rb {
		byID[x.ID] = x
	}
	seen := map[string]bool{}
	var walk func(id string) bool
	walk = func(id string) bool {
		if id == b {
			return true
		}
		if seen[id] {
			return false
		}
		seen[id] = true
		for _, d := range byID[id].DependsOn {
			if walk(d) {
				return true
			}
		}
		return false
	}
	return walk(a)
}

func TestRunbookTwoCircuits(t *testing.T) {
	p := mustDerive(t, "../../examples/hub-spoke-two-circuits.yaml")
	rb := p.Runbook
	checkValidOrder(t, rb)
	gw := index(rb, ActCreateGateway, "/hub-ergw-asr")
	conn := index(rb, ActCreateConn, "/hub-ergw-asr-er-singapore")
	hubSide := index(rb, ActCreatePeering, "hub-vnet-asr/peerings/hub-to-spoke1")
	spokeSide := index(rb, ActCreatePeering, "spoke1-vnet-asr/peerings/spoke1-to-hub")
	rt := index(rb, ActCreateRT, "/spoke-rt-asr")
	assoc := index(rb, ActAssociateRT, "spoke1-vnet-asr/subnets/app-subnet")
	backend := index(rb, ActFailoverVMs, "contoso-app/backend")
	frontend := index(rb, ActFailoverVMs, "contoso-app/frontend")
	for name, i := range map[string]int{"gateway": gw, "connection": conn, "hub peering": hubSide, "spoke peering": spokeSide, "route table": rt, "association": assoc, "backend": backend, "frontend": frontend} {
		if i < 0 {
			t.Fatalf("runbook lacks the %s action", name)
		}
	}
	if !(gw < conn && hubSide < spokeSide && rt < assoc && assoc < backend && conn < backend && backend < frontend) {
		t.Errorf("order: gateway %d connection %d hub-side %d spoke-side %d rt %d assoc %d backend %d frontend %d", gw, conn, hubSide, spokeSide, rt, assoc, backend, frontend)
	}
	if !dependsOnTransitively(rb, rb[conn].ID, rb[gw].ID) || !dependsOnTransitively(rb, rb[spokeSide].ID, rb[gw].ID) || !dependsOnTransitively(rb, rb[spokeSide].ID, rb[hubSide].ID) {
		t.Error("the connection and the useRemoteGateways peering must wait for the gateway, and the spoke side for the hub side")
	}
	if rb[conn].Phase != PhaseBefore || rb[gw].Phase != PhaseBefore {
		t.Errorf("with provisionBeforeFailover and two circuits the gateway and connection are made ahead: %s, %s", rb[gw].Phase, rb[conn].Phase)
	}
	if !dependsOnTransitively(rb, rb[frontend].ID, rb[backend].ID) {
		t.Error("the frontend group must wait for the backend group")
	}
	checks := 0
	for _, a := range rb {
		if a.Action == ActRunCheck && a.Phase == PhaseFailover {
			checks++
		}
	}
	if checks != 2 {
		t.Errorf("want the plan's 2 checks in the failover phase, got %d", checks)
	}
	assertPeeringsSerial(t, rb)
}

// assertPeeringsSerial checks that no two peering actions on one VNet may
// run at once: of any two, one waits for the other.
func assertPeeringsSerial(t *testing.T, rb []Action) {
	t.Helper()
	var ps []Action
	for _, a := range rb {
		if a.Action == ActCreatePeering {
			ps = append(ps, a)
		}
	}
	vnets := func(a Action) []string {
		// detail is "from to to [...]"
		f := strings.Fields(a.Detail)
		return []string{f[0], f[2]}
	}
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			a, b := ps[i], ps[j]
			shared := false
			for _, v := range vnets(a) {
				shared = shared || slices.Contains(vnets(b), v)
			}
			if shared && a.Phase == b.Phase && !dependsOnTransitively(rb, b.ID, a.ID) {
				t.Errorf("peerings %s and %s touch one VNet and may run in parallel", a.ID, b.ID)
			}
		}
	}
}

func TestRunbookSingleCircuit(t *testing.T) {
	p := mustDerive(t, "../../examples/single-circuit-same-ip.yaml")
	rb := p.Runbook
	checkValidOrder(t, rb)
	var del, create, fbDel, fbCreate = -1, -1, -1, -1
	for i, a := range rb {
		switch {
		case a.Phase == PhaseFailover && a.Action == ActDeleteConn && a.Resource == "eastasia/connections/hub-ergw-hongkong":
			del = i
		case a.Phase == PhaseFailover && a.Action == ActCreateConn && a.Resource == "southeastasia/connections/hub-ergw-asr-er-hongkong":
			create = i
		case a.Phase == PhaseFailback && a.Action == ActDeleteConn && a.Resource == "southeastasia/connections/hub-ergw-asr-er-hongkong":
			fbDel = i
		case a.Phase == PhaseFailback && a.Action == ActCreateConn && a.Resource == "eastasia/connections/hub-ergw-hongkong":
			fbCreate = i
		}
	}
	if del < 0 || create < 0 || fbDel < 0 || fbCreate < 0 {
		t.Fatalf("missing actions: delete %d create %d failback delete %d failback create %d", del, create, fbDel, fbCreate)
	}
	if !(del < create) || !dependsOnTransitively(rb, rb[create].ID, rb[del].ID) {
		t.Error("the source connection must be deleted strictly before the target connection is made")
	}
	if !(fbDel < fbCreate) || !dependsOnTransitively(rb, rb[fbCreate].ID, rb[fbDel].ID) {
		t.Error("failback must delete the target connection strictly before reconnecting the source")
	}
	if rb[del].OnFailure != "ask" {
		t.Errorf("a disconnect that fails because the source is down must ask, got %q", rb[del].OnFailure)
	}
	for _, a := range rb {
		if a.Action == ActCreateConn && a.Phase == PhaseBefore {
			t.Errorf("no connection may be made before failover on the single circuit: %s", a.ID)
		}
	}
	assertPeeringsSerial(t, rb)
}

func TestRunbookNotProvisioned(t *testing.T) {
	data, err := os.ReadFile("../../examples/hub-spoke-two-circuits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Parse("x.yaml", []byte(strings.Replace(string(data), "provisionBeforeFailover: true", "provisionBeforeFailover: false", 1)))
	if err != nil {
		t.Fatal(err)
	}
	p := Derive(s)
	for _, a := range p.Runbook {
		if a.Phase == PhaseBefore {
			t.Errorf("without provisionBeforeFailover nothing runs before failover: %s", a.ID)
		}
	}
	if p.Estimate.Failover.Duration < 45*60e9 {
		t.Errorf("the failover estimate must count the gateway's 45 minutes, got %s", p.Estimate.Failover)
	}
}

// The same spec in another list order gives the same plan.
func TestPlanOrderIndependent(t *testing.T) {
	data, err := os.ReadFile("../../examples/hub-spoke-two-circuits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, err := spec.Parse("a.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := spec.Parse("a.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	n := &b.Networks[0]
	slices.Reverse(n.VirtualNetworks)
	slices.Reverse(n.Peerings)
	slices.Reverse(n.RouteTables)
	slices.Reverse(b.Protection.VirtualMachines)
	pa, pb := Derive(a), Derive(b)
	ja, _ := json.Marshal(pa)
	jb, _ := json.Marshal(pb)
	if !bytes.Equal(ja, jb) {
		t.Errorf("the plan differs with list order:\n%s\n%s", ja, jb)
	}
	fa, _ := json.Marshal(Check(pa))
	fb, _ := json.Marshal(Check(pb))
	if !bytes.Equal(fa, fb) {
		t.Errorf("findings differ with list order:\n%s\n%s", fa, fb)
	}
}
