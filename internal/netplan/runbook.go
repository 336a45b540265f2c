package netplan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/spec"
)

// Runbook phases.
const (
	PhaseBefore   = "before-failover"
	PhaseFailover = "failover"
	PhaseAfter    = "after-failover"
	PhaseFailback = "failback"
)

// Runbook actions (network-rules.md, "The runbook"); run-script carries a
// plan's script actions.
const (
	ActCreateVNet      = "create-virtual-network"
	ActCreateSubnet    = "create-subnet"
	ActCreateRT        = "create-route-table"
	ActAssociateRT     = "associate-route-table"
	ActCreateAppliance = "create-appliance"
	ActCreateGateway   = "create-gateway"
	ActCreateConn      = "create-connection"
	ActDeleteConn      = "delete-connection"
	ActCreatePeering   = "create-peering"
	ActFailoverVMs     = "failover-virtual-machines"
	ActRunCheck        = "run-check"
	ActRunScript       = "run-script"
	ActManual          = "manual"
)

// Action is one runbook step. The list order is a valid order; DependsOn
// says what may run in parallel.
type Action struct {
	ID        string   `json:"id"`
	Phase     string   `json:"phase"`
	Action    string   `json:"action"`
	Resource  string   `json:"resource"`
	DependsOn []string `json:"dependsOn"`
	Detail    string   `json:"detail,omitempty"`
	// OnFailure: stop (default), ask (wait for an operator) or proceed.
	OnFailure string        `json:"onFailure,omitempty"`
	Estimate  spec.Duration `json:"estimate"`
}

// Estimate is the expected duration of each phase along its critical path.
type Estimate struct {
	BeforeFailover spec.Duration `json:"beforeFailover"`
	Failover       spec.Duration `json:"failover"`
	AfterFailover  spec.Duration `json:"afterFailover"`
	Failback       spec.Duration `json:"failback"`
}

var actionCost = map[string]time.Duration{
	ActCreateVNet: time.Minute, ActCreateSubnet: time.Minute, ActCreateRT: time.Minute,
	ActAssociateRT: time.Minute, ActCreateAppliance: 5 * time.Minute, ActCreateGateway: 45 * time.Minute,
	ActCreateConn: 5 * time.Minute, ActDeleteConn: 5 * time.Minute, ActCreatePeering: time.Minute,
	ActFailoverVMs: 5 * time.Minute, ActRunCheck: time.Minute, ActRunScript: time.Minute, ActManual: 5 * time.Minute,
}

type runbook struct {
	actions []Action
	byID    map[string]int
	// lastPeering serialises peering operations per VNet.
	lastPeering map[string]string
}

func (b *runbook) add(a Action) string {
	if a.Estimate.Duration == 0 {
		a.Estimate = spec.Duration{Duration: actionCost[a.Action]}
	}
	if a.ID == "" {
		a.ID = a.Action + ":" + a.Resource
		if a.Phase == PhaseFailback || a.Phase == PhaseAfter {
			a.ID = a.Phase + "/" + a.ID
		}
	}
	for base, n := a.ID, 2; ; n++ {
		if _, dup := b.byID[a.ID]; !dup {
			break
		}
		a.ID = fmt.Sprintf("%s#%d", base, n)
	}
	var deps []string
	for _, d := range a.DependsOn {
		if d != "" && !slices.Contains(deps, d) {
			deps = append(deps, d)
		}
	}
	a.DependsOn = deps
	if a.DependsOn == nil {
		a.DependsOn = []string{}
	}
	b.byID[a.ID] = len(b.actions)
	b.actions = append(b.actions, a)
	return a.ID
}

func (b *runbook) ids(phase string) []string {
	var out []string
	for _, a := range b.actions {
		if a.Phase == phase {
			out = append(out, a.ID)
		}
	}
	return out
}

// buildRunbook writes the ordered network actions and the plan's groups.
func (p *Plan) buildRunbook() []Action {
	b := &runbook{byID: map[string]int{}, lastPeering: map[string]string{}}
	site := p.Topology.TargetSite
	pre := PhaseFailover
	if p.Topology.Provisioned {
		pre = PhaseBefore
	}
	gen := func(id string) bool { return p.generated[id] }
	created := map[string]string{} // resource ID -> action ID

	for _, v := range p.Target.VirtualNetworks {
		id := site + "/" + v.Name
		if gen(id) {
			created[id] = b.add(Action{Phase: pre, Action: ActCreateVNet, Resource: id, Detail: "address space " + specPrefixesString(v.AddressSpace)})
		}
	}
	for _, v := range p.Target.VirtualNetworks {
		for _, s := range v.Subnets {
			id := site + "/" + v.Name + "/subnets/" + s.Name
			if gen(id) {
				created[id] = b.add(Action{Phase: pre, Action: ActCreateSubnet, Resource: id, DependsOn: []string{created[site+"/"+v.Name]}, Detail: s.AddressPrefix.String()})
			}
		}
	}
	for _, rt := range p.Target.RouteTables {
		id := site + "/routeTables/" + rt.Name
		if gen(id) {
			created[id] = b.add(Action{Phase: pre, Action: ActCreateRT, Resource: id, Detail: routeCount(len(rt.Routes))})
		}
	}
	for _, a := range p.Target.Appliances {
		id := site + "/" + a.Name
		if gen(id) {
			created[id] = b.add(Action{Phase: pre, Action: ActCreateAppliance, Resource: id, DependsOn: []string{created[site+"/"+a.VirtualNetwork+"/subnets/"+a.Subnet]}, Detail: a.IPAddress.String()})
		}
	}
	for _, v := range p.Target.VirtualNetworks {
		for _, s := range v.Subnets {
			if s.RouteTable == "" {
				continue
			}
			sid := site + "/" + v.Name + "/subnets/" + s.Name
			rid := site + "/routeTables/" + s.RouteTable
			if gen(sid) || gen(rid) {
				b.add(Action{Phase: pre, Action: ActAssociateRT, Resource: sid, DependsOn: []string{created[sid], created[rid]}, Detail: "route table " + s.RouteTable})
			}
		}
	}
	for _, g := range p.Target.Gateways {
		id := site + "/" + g.Name
		if gen(id) {
			created[id] = b.add(Action{Phase: pre, Action: ActCreateGateway, Resource: id, DependsOn: []string{created[site+"/"+g.VirtualNetwork+"/subnets/GatewaySubnet"]}, Detail: g.Type + " " + g.Sku + " in " + g.VirtualNetwork + " (45 minutes or more)"})
		}
	}
	p.addPeerings(b, pre, created)

	// Connections: made ahead unless they would meet the live source on one
	// circuit with overlapping prefixes (ER-04).
	conflicts := p.conflictingSourceConnections()
	for _, c := range p.Target.Connections {
		id := site + "/connections/" + c.Name
		if !gen(id) {
			continue
		}
		gw := created[site+"/"+c.Gateway]
		if srcs := conflicts[c.Circuit]; len(srcs) > 0 {
			var dels []string
			for _, sc := range srcs {
				dels = append(dels, p.deleteSource(b, sc))
			}
			created[id] = b.add(Action{Phase: PhaseFailover, Action: ActCreateConn, Resource: id, DependsOn: append([]string{gw}, dels...), Detail: fmt.Sprintf("%s to circuit %s, only after the source connection is deleted (same prefixes on one circuit)", c.Gateway, c.Circuit)})
			continue
		}
		created[id] = b.add(Action{Phase: pre, Action: ActCreateConn, Resource: id, DependsOn: []string{gw}, Detail: fmt.Sprintf("%s to circuit %s, routing weight %d", c.Gateway, c.Circuit, c.RoutingWeight)})
	}

	// ER-11: a standby circuit thinner than production is raised during failover.
	var raise []string
	for _, name := range p.Topology.TargetCircuits {
		tc := p.spec.Circuit(name)
		if tc == nil {
			continue
		}
		for _, sname := range p.Topology.SourceCircuits {
			if sc := p.spec.Circuit(sname); sc != nil && sc.BandwidthMbps > tc.BandwidthMbps && !slices.Contains(p.Topology.SourceCircuits, name) {
				to := sc.BandwidthMbps
				if r := p.spec.Recovery.NetworkMapping.Connectivity.RaiseBandwidthMbps; r > 0 {
					to = r
				}
				raise = append(raise, b.add(Action{Phase: PhaseFailover, Action: ActManual, Resource: "circuits/" + name, Detail: fmt.Sprintf("raise circuit %s from %d to %d Mbps (bandwidth can be raised, never lowered)", name, tc.BandwidthMbps, to)}))
				break
			}
		}
	}

	// Fencing: with the same IPs on two circuits, on-premises must stop
	// sending to the source hub before the machines answer at the target,
	// and the source hub must not advertise again when its region returns.
	// If the region is down, its hub advertises nothing: a failed
	// disconnect does not stop the failover.
	if p.SameIPs() && len(conflicts) == 0 {
		for _, sc := range p.srcConns {
			if sc.Gateway != nil && sc.Gateway.VNet == p.hub {
				b.add(Action{Phase: PhaseFailover, Action: ActDeleteConn, Resource: sc.ID(), OnFailure: "proceed",
					Detail: fmt.Sprintf("disconnect %s from circuit %s so that on-premises reaches the target hub, and keep it from coming back (fencing); if the source region is down, it advertises nothing and the job goes on", sc.Gateway.Name, sc.Circuit.Name)})
			}
		}
	}

	// The machines wait for the network actions of the failover phase, not
	// for a bandwidth raise, which can go on beside them.
	var netDone []string
	for _, id := range b.ids(PhaseFailover) {
		if !slices.Contains(raise, id) {
			netDone = append(netDone, id)
		}
	}
	for _, pl := range p.spec.Recovery.Plans {
		p.addGroups(b, pl, PhaseFailover, netDone)
	}

	// Failback: the reverse.
	var fb []string
	if len(conflicts) > 0 {
		var dels []string
		for _, c := range p.Target.Connections {
			if len(conflicts[c.Circuit]) > 0 {
				dels = append(dels, b.add(Action{Phase: PhaseFailback, Action: ActDeleteConn, Resource: site + "/connections/" + c.Name, Detail: fmt.Sprintf("disconnect the target hub from %s before the source reconnects", c.Circuit)}))
			}
		}
		for _, circuit := range sortedKeys(conflicts) {
			for _, sc := range conflicts[circuit] {
				fb = append(fb, b.add(Action{Phase: PhaseFailback, Action: ActCreateConn, Resource: sc.ID(), DependsOn: dels, Detail: fmt.Sprintf("reconnect %s to circuit %s, only after the target connection is deleted", sc.Gateway.Name, sc.Circuit.Name)}))
			}
		}
	} else if p.SameIPs() {
		for _, sc := range p.srcConns {
			if sc.Gateway != nil && sc.Gateway.VNet == p.hub {
				fb = append(fb, b.add(Action{Phase: PhaseFailback, Action: ActCreateConn, Resource: sc.ID(), Detail: fmt.Sprintf("reconnect %s to circuit %s (it was fenced at failover)", sc.Gateway.Name, sc.Circuit.Name)}))
			}
		}
	}
	for _, pl := range p.spec.Recovery.Plans {
		p.addGroups(b, pl, PhaseFailback, fb)
	}
	return b.actions
}

// deleteSource adds the failover's deletion of a source connection that
// shares the target's circuit. It may fail because the source region is down
// (AS-05): ask, or proceed under the spec's allowDisconnectFailure.
func (p *Plan) deleteSource(b *runbook, sc *Connection) string {
	onFail, then := "ask", "the job waits for an operator"
	if p.spec.Recovery.NetworkMapping.Connectivity.AllowDisconnectFailure {
		onFail, then = "proceed", "allowDisconnectFailure lets the job go on"
	}
	detail := fmt.Sprintf("disconnect %s from circuit %s before the target connects; if the source region is down this may fail: %s", sc.Gateway.Name, sc.Circuit.Name, then)
	return b.add(Action{Phase: PhaseFailover, Action: ActDeleteConn, Resource: sc.ID(), Detail: detail, OnFailure: onFail})
}

// conflictingSourceConnections returns, per target circuit, the source
// connections on that circuit whose advertised prefixes overlap what the
// target hub will advertise.
func (p *Plan) conflictingSourceConnections() map[string][]*Connection {
	out := map[string][]*Connection{}
	if p.hub == nil {
		return out
	}
	var tgtAdv []netip.Prefix
	for _, v := range p.Target.VirtualNetworks {
		for _, pr := range v.AddressSpace {
			tgtAdv = append(tgtAdv, pr.Prefix)
		}
	}
	for _, sc := range p.srcConns {
		if sc.Gateway == nil || sc.Gateway.VNet == nil || sc.Circuit == nil {
			continue
		}
		if !slices.Contains(p.Topology.TargetCircuits, sc.Circuit.Name) && !slices.Contains(p.targetCircuits(), sc.Circuit.Name) {
			continue
		}
		if _, _, ok := prefixesOverlap(Advertised(sc.Gateway.VNet), tgtAdv); ok {
			out[sc.Circuit.Name] = append(out[sc.Circuit.Name], sc)
		}
	}
	return out
}

// Advertised returns what a hub's gateway advertises to its circuits: its
// own space plus every spoke peered with useRemoteGateways whose reverse
// allows gateway transit.
func Advertised(hub *VNet) []netip.Prefix {
	out := slices.Clone(hub.AddressSpace)
	for _, pe := range hub.Site.Peerings {
		if pe.To == hub && pe.UseRemoteGateways && pe.Reverse != nil && pe.Reverse.AllowGatewayTransit {
			out = append(out, pe.From.AddressSpace...)
		}
	}
	return out
}

// addPeerings creates the target peerings, hub side (allowGatewayTransit)
// before spoke side (useRemoteGateways), never two on one VNet at once.
func (p *Plan) addPeerings(b *runbook, phase string, created map[string]string) {
	site := p.Topology.TargetSite
	type pair struct{ first, second *spec.Peering }
	var pairs []pair
	done := map[int]bool{}
	for i := range p.Target.Peerings {
		if done[i] {
			continue
		}
		a := &p.Target.Peerings[i]
		done[i] = true
		var rev *spec.Peering
		for j := range p.Target.Peerings {
			if !done[j] && p.Target.Peerings[j].From == a.To && p.Target.Peerings[j].To == a.From {
				rev = &p.Target.Peerings[j]
				done[j] = true
				break
			}
		}
		pr := pair{a, rev}
		if rev != nil && (rev.AllowGatewayTransit || a.UseRemoteGateways) {
			pr = pair{rev, a}
		}
		pairs = append(pairs, pr)
	}
	gwAction := func(vnet string) string {
		for _, g := range p.Target.Gateways {
			if g.VirtualNetwork == vnet {
				return created[site+"/"+g.Name]
			}
		}
		return ""
	}
	for _, pr := range pairs {
		var firstID string
		for k, pe := range []*spec.Peering{pr.first, pr.second} {
			if pe == nil {
				continue
			}
			id := site + "/" + pe.From + "/peerings/" + pe.Name
			if !p.generated[id] {
				continue
			}
			deps := []string{created[site+"/"+pe.From], created[site+"/"+pe.To], b.lastPeering[pe.From], b.lastPeering[pe.To]}
			if k == 1 {
				deps = append(deps, firstID)
			}
			if pe.UseRemoteGateways {
				deps = append(deps, gwAction(pe.To))
			}
			flags := []string{}
			for _, f := range []struct {
				on   bool
				name string
			}{{pe.AllowVirtualNetworkAccess, "allowVirtualNetworkAccess"}, {pe.AllowForwardedTraffic, "allowForwardedTraffic"}, {pe.AllowGatewayTransit, "allowGatewayTransit"}, {pe.UseRemoteGateways, "useRemoteGateways"}} {
				if f.on {
					flags = append(flags, f.name)
				}
			}
			aid := b.add(Action{Phase: phase, Action: ActCreatePeering, Resource: id, DependsOn: deps, Detail: pe.From + " to " + pe.To + " [" + strings.Join(flags, ", ") + "]"})
			b.lastPeering[pe.From], b.lastPeering[pe.To] = aid, aid
			if k == 0 {
				firstID = aid
			}
		}
	}
}

// addGroups adds a plan's groups in order: pre actions, the failover of the
// group's machines, post actions; each group after the previous one.
func (p *Plan) addGroups(b *runbook, pl spec.Plan, phase string, after []string) {
	prev := slices.Clone(after)
	verb := "fail over"
	if phase == PhaseFailback {
		verb = "fail back"
	}
	for _, g := range pl.Groups {
		res := pl.Name + "/" + g.Name
		var preIDs []string
		for i, a := range g.Pre {
			preIDs = append(preIDs, p.addPlanAction(b, phase, fmt.Sprintf("%s/pre[%d]", res, i), a, prev))
		}
		deps := append(slices.Clone(prev), preIDs...)
		fo := b.add(Action{Phase: phase, Action: ActFailoverVMs, Resource: res, DependsOn: deps, Detail: verb + " " + strings.Join(g.VirtualMachines, ", ")})
		next := []string{fo}
		for i, a := range g.Post {
			next = append(next, p.addPlanAction(b, phase, fmt.Sprintf("%s/post[%d]", res, i), a, []string{fo}))
		}
		prev = next
	}
}

func (p *Plan) addPlanAction(b *runbook, phase, res string, a spec.Action, deps []string) string {
	switch {
	case a.Check != nil:
		target := a.Check.HTTP
		if target == "" {
			target = "tcp://" + a.Check.TCP
		}
		return b.add(Action{Phase: phase, Action: ActRunCheck, Resource: res, DependsOn: deps, Detail: "from " + a.Check.From + " " + target + " within " + a.Check.Timeout.String(), Estimate: a.Check.Timeout})
	case a.Manual != nil:
		return b.add(Action{Phase: phase, Action: ActManual, Resource: res, DependsOn: deps, Detail: a.Manual.Instruction})
	case a.Script != nil:
		return b.add(Action{Phase: phase, Action: ActRunScript, Resource: res, DependsOn: deps, Detail: strings.Join(a.Script.Command, " "), Estimate: a.Script.Timeout})
	}
	return ""
}

// estimate computes each phase's critical path; actions of earlier phases
// are done by then.
func estimate(actions []Action) Estimate {
	finish := map[string]time.Duration{}
	phaseOf := map[string]string{}
	total := map[string]time.Duration{}
	for _, a := range actions {
		phaseOf[a.ID] = a.Phase
		var start time.Duration
		for _, d := range a.DependsOn {
			if phaseOf[d] == a.Phase && finish[d] > start {
				start = finish[d]
			}
		}
		finish[a.ID] = start + a.Estimate.Duration
		if finish[a.ID] > total[a.Phase] {
			total[a.Phase] = finish[a.ID]
		}
	}
	return Estimate{
		BeforeFailover: spec.Duration{Duration: total[PhaseBefore]},
		Failover:       spec.Duration{Duration: total[PhaseFailover]},
		AfterFailover:  spec.Duration{Duration: total[PhaseAfter]},
		Failback:       spec.Duration{Duration: total[PhaseFailback]},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func routeCount(n int) string {
	if n == 1 {
		return "1 route"
	}
	return fmt.Sprintf("%d routes", n)
}
