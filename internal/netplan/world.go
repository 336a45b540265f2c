package netplan

import (
	"net/netip"
	"slices"

	"github.com/standby-dr/standby/internal/spec"
)

// Trace states.
const (
	StateSource   = "source"
	StateTarget   = "target"
	StateTest     = "test"
	StateFailover = "failover"
)

// States lists the trace states.
var States = []string{StateSource, StateTarget, StateTest, StateFailover}

// machine is a NIC that sends and receives: a protected VM where it runs in
// a state, or an appliance.
type machine struct {
	Name   string // node name: site/vm
	Site   string
	VNet   *VNet
	Subnet *Subnet
	IP     netip.Addr
	// Appliance is set when the NIC is an appliance's.
	Appliance *Appliance
}

// world is every site's network as it stands in one state, with the
// machines running and the connections that carry traffic.
type world struct {
	state    string
	sites    map[string]*Site
	machines []*machine
	// prefer is the role whose connections on-premises prefers on equal
	// prefixes: the source before failover, the target after.
	prefer string
	// notes explain what a state leaves out, for dropped traces.
	notes []string
}

// World builds the network of one state. Unknown states are reported by
// the caller; World treats them as source.
func (p *Plan) world(state string) *world {
	w := &world{state: state, prefer: "source"}
	nets := slices.Clone(p.srcNets)
	roles := map[string]string{}
	for _, n := range nets {
		roles[n.Site] = "source"
	}
	roles[p.Topology.TargetSite] = "target"
	var target *spec.Network
	switch state {
	case StateTarget:
		target = p.targetAt(PhaseBefore, PhaseFailover, PhaseAfter)
	default:
		target = p.targetAt(PhaseBefore)
	}
	if state == StateTest {
		merged := cloneNetwork(target)
		tn := p.TestNetwork
		merged.VirtualNetworks = append(merged.VirtualNetworks, tn.VirtualNetworks...)
		merged.Peerings = append(merged.Peerings, tn.Peerings...)
		merged.RouteTables = append(merged.RouteTables, tn.RouteTables...)
		merged.Appliances = append(merged.Appliances, tn.Appliances...)
		merged.Gateways = append(merged.Gateways, tn.Gateways...)
		merged.Connections = append(merged.Connections, tn.Connections...)
		target = &merged
	}
	if state == StateTarget || state == StateFailover {
		// The source is fenced: its connections carry nothing.
		var fenced []*spec.Network
		for _, n := range nets {
			c := cloneNetwork(n)
			c.Connections = nil
			fenced = append(fenced, &c)
		}
		nets = fenced
		w.prefer = "target"
		w.notes = append(w.notes, "the source site is failed over: its connections are down")
	}
	nets = append(nets, target)
	w.sites = buildSites(p.spec, nets, roles)

	place := func(name string, pl Placement) {
		st := w.sites[pl.Site]
		if st == nil || !pl.IP.IsValid() {
			return
		}
		v := st.VNet(pl.VNet)
		if v == nil {
			return
		}
		w.machines = append(w.machines, &machine{Name: name, Site: pl.Site, VNet: v, Subnet: v.Subnet(pl.Subnet), IP: pl.IP})
	}
	for _, m := range p.Machines {
		switch state {
		case StateSource:
			place(m.Source.Site+"/"+m.VM, m.Source)
		case StateTest:
			place(m.Source.Site+"/"+m.VM, m.Source)
			place(m.Test.Site+"/"+m.VM+"-test", m.Test)
		default:
			place(m.Target.Site+"/"+m.VM, m.Target)
		}
	}
	for _, st := range sortedSites(w.sites) {
		for _, a := range st.Appliances {
			if a.VNet != nil {
				w.machines = append(w.machines, &machine{Name: a.ID(), Site: st.Name, VNet: a.VNet, Subnet: a.Subnet, IP: a.IP, Appliance: a})
			}
		}
	}
	return w
}

// targetAt returns the target network with what exists once the given
// phases have run: pre-provisioned resources, and generated ones whose
// create action belongs to one of the phases; connections deleted in those
// phases are gone.
func (p *Plan) targetAt(phases ...string) *spec.Network {
	made := map[string]bool{}
	deleted := map[string]bool{}
	for _, a := range p.Runbook {
		if !slices.Contains(phases, a.Phase) {
			continue
		}
		switch a.Action {
		case ActDeleteConn:
			deleted[a.Resource] = true
		case ActAssociateRT:
			made["assoc:"+a.Resource] = true
		default:
			made[a.Resource] = true
		}
	}
	site := p.Topology.TargetSite
	exists := func(id string) bool { return !p.generated[id] || made[id] }
	out := spec.Network{Site: site}
	for _, v := range p.Target.VirtualNetworks {
		vid := site + "/" + v.Name
		if !exists(vid) {
			continue
		}
		nv := v
		nv.Subnets = nil
		for _, s := range v.Subnets {
			sid := vid + "/subnets/" + s.Name
			if !exists(sid) {
				continue
			}
			if s.RouteTable != "" && (p.generated[sid] || p.generated[site+"/routeTables/"+s.RouteTable]) && !made["assoc:"+sid] {
				s.RouteTable = ""
			}
			nv.Subnets = append(nv.Subnets, s)
		}
		out.VirtualNetworks = append(out.VirtualNetworks, nv)
	}
	for _, rt := range p.Target.RouteTables {
		if exists(site + "/routeTables/" + rt.Name) {
			out.RouteTables = append(out.RouteTables, rt)
		}
	}
	for _, a := range p.Target.Appliances {
		if exists(site + "/" + a.Name) {
			out.Appliances = append(out.Appliances, a)
		}
	}
	for _, g := range p.Target.Gateways {
		if exists(site + "/" + g.Name) {
			out.Gateways = append(out.Gateways, g)
		}
	}
	for _, pe := range p.Target.Peerings {
		if exists(site + "/" + pe.From + "/peerings/" + pe.Name) {
			out.Peerings = append(out.Peerings, pe)
		}
	}
	for _, c := range p.Target.Connections {
		id := site + "/connections/" + c.Name
		if exists(id) && !deleted[id] {
			out.Connections = append(out.Connections, c)
		}
	}
	return &out
}
