package netplan

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

func asRules() []Rule {
	return []Rule{
		{ID: "AS-01", Severity: SevError, Scope: ScopeTarget, Title: "network mapping in both directions for every VNet with protected machines", check: checkAS01},
		{ID: "AS-02", Severity: SevWarning, Scope: ScopeTarget, Title: "each protected source subnet has a same-named target subnet", check: checkAS02},
		{ID: "AS-03", Severity: SevWarning, Scope: ScopeTarget, Title: "each static source IP is free in its target subnet", check: checkAS03},
		{ID: "AS-04", Severity: SevError, Scope: ScopeTest, Title: "the test network is not the failover network and is isolated", check: checkAS04},
		{ID: "AS-05", Severity: SevError, Scope: ScopeFailover, Title: "single circuit with the same IPs: disconnect the source before connecting the target, and the reverse on failback", check: checkAS05},
		{ID: "AS-06", Severity: SevWarning, Scope: ScopeFailover, Title: "what Site Recovery does not create is provisioned before failover or in the runbook", check: checkAS06},
	}
}

// vnetMapping returns the VNet map source ID -> target ID, and its reverse
// target ID -> source IDs.
func (c *checkCtx) vnetMapping() (map[string]string, map[string][]string) {
	fwd, back := map[string]string{}, map[string][]string{}
	for _, e := range c.p.Mapping {
		if e.Kind == "virtualNetwork" {
			fwd[e.Source] = e.Target
			back[e.Target] = append(back[e.Target], e.Source)
		}
	}
	return fwd, back
}

// protectedVNets returns the source VNet IDs that hold protected NICs.
func (c *checkCtx) protectedVNets() []string {
	set := map[string]bool{}
	for _, vm := range c.p.spec.Protection.VirtualMachines {
		for _, nic := range vm.NICs {
			set[vm.Site+"/"+nic.VirtualNetwork] = true
		}
	}
	return sortedKeys(set)
}

func checkAS01(c *checkCtx) {
	fwd, back := c.vnetMapping()
	for _, id := range c.protectedVNets() {
		t := fwd[id]
		switch {
		case t == "":
			c.report(id, "protect machines of a source site's VNets only, and set recovery.targetSite",
				"virtual network %s has protected machines but no network mapping to the target site", id)
		case c.vnetByID(t) == nil:
			c.report(id, fmt.Sprintf("declare %s in %s, or let standby generate it", t, c.targetNetPath()),
				"virtual network %s maps to %s, which the target network does not have", id, t)
		case len(back[t]) > 1:
			srcs := append([]string{}, back[t]...)
			sort.Strings(srcs)
			c.report(t, "give the source VNets distinct names, or pre-provision a distinct target VNet for each in "+c.targetNetPath(),
				"target virtual network %s is the mapping of %s: failback cannot map it back to one source network", t, strings.Join(srcs, " and "))
		}
	}
}

func checkAS02(c *checkCtx) {
	fwd, _ := c.vnetMapping()
	seen := map[string]bool{}
	for _, vm := range c.p.spec.Protection.VirtualMachines {
		for _, nic := range vm.NICs {
			sid := vm.Site + "/" + nic.VirtualNetwork + "/subnets/" + nic.Subnet
			if seen[sid] {
				continue
			}
			seen[sid] = true
			tv := c.vnetByID(fwd[vm.Site+"/"+nic.VirtualNetwork])
			if tv == nil || tv.Subnet(nic.Subnet) != nil {
				continue
			}
			var names []string
			for _, s := range tv.Subnets {
				if s.Name != "GatewaySubnet" {
					names = append(names, s.Name)
				}
			}
			sort.Strings(names)
			picks := "no subnet at all"
			if len(names) > 0 {
				picks = "the alphabetically first one, " + names[0]
			}
			c.report(tv.ID(), fmt.Sprintf("add a subnet named %s to %s in %s", nic.Subnet, tv.Name, c.targetNetPath()),
				"target virtual network %s has no subnet %s for the protected machines of %s: Site Recovery picks %s", tv.ID(), nic.Subnet, sid, picks)
		}
	}
}

func checkAS03(c *checkCtx) {
	tgt := c.targetSite()
	if tgt == nil {
		return
	}
	for _, m := range c.p.Machines {
		ip := m.Source.IP
		if !ip.IsValid() {
			continue // dynamic
		}
		want, err := c.p.tr.addr(ip)
		if err != nil || m.Target.IP == want {
			continue
		}
		tv := tgt.VNet(m.Target.VNet)
		if tv == nil {
			continue
		}
		ts := tv.Subnet(m.Target.Subnet)
		if ts == nil {
			continue // AS-02
		}
		keep := "keep"
		if !c.p.SameIPs() {
			keep = "take its translated address"
		}
		var why, hint string
		switch {
		case !ts.Prefix.Contains(want):
			why = fmt.Sprintf("it lies outside target subnet %s (%s)", ts.ID(), ts.Prefix)
			hint = fmt.Sprintf("give target subnet %s a prefix that holds %s", ts.Name, want)
		case reservedInSubnet(ts.Prefix, want):
			why = "it is one of the addresses Azure reserves in " + ts.ID()
			hint = "give the machine an address Azure does not reserve (not the first four or the last of the subnet)"
		case tgt.Appliance(want) != nil:
			why = "pre-provisioned appliance " + tgt.Appliance(want).ID() + " has it"
			hint = fmt.Sprintf("move appliance %s in %s to another address", tgt.Appliance(want).Name, c.targetNetPath())
		default:
			why = "another machine's NIC takes it first"
			for _, o := range c.p.Machines {
				if o.Target.IP == want && o.Target.Site == m.Target.Site && o.Target.VNet == m.Target.VNet {
					why = fmt.Sprintf("%s/%s/nics/%d takes it first", o.Source.Site, o.VM, o.NIC)
				}
			}
			hint = "give the two machines different addresses"
		}
		gets := "no address"
		if m.Target.IP.IsValid() {
			gets = m.Target.IP.String()
		}
		c.report(fmt.Sprintf("%s/%s/nics/%d", m.Source.Site, m.VM, m.NIC), hint,
			"%s cannot %s %s after failover: %s; it gets %s, and whatever addresses it by IP breaks", m.VM, keep, want, why, gets)
	}
}

func checkAS04(c *checkCtx) {
	site := c.p.Topology.TargetSite
	tn := c.p.TestNetwork
	if site == "" || tn == nil {
		return
	}
	cfg := c.p.spec.Recovery.NetworkMapping.TestNetwork
	names := map[string]bool{}
	for _, v := range tn.VirtualNetworks {
		names[v.Name] = true
	}
	var prod []netip.Prefix
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			prod = append(prod, v.AddressSpace...)
		}
	}
	for _, o := range c.p.spec.OnPremises {
		for _, p := range o.AddressSpace {
			prod = append(prod, p.Prefix)
		}
	}
	for _, v := range tn.VirtualNetworks {
		id := site + "/" + v.Name
		if findVNet(c.p.Target, v.Name) != nil {
			c.report(id, "set recovery.networkMapping.targetNames.suffix to something other than the test suffix, or rename the target VNet",
				"test network %s has the name of a failover (target) network: a drill would run in production's recovery network", id)
		}
		if cfg.ConnectToCircuit {
			var sp []netip.Prefix
			for _, p := range v.AddressSpace {
				sp = append(sp, p.Prefix)
			}
			if x, y, ok := prefixesOverlap(sp, prod); ok {
				hint := "set testNetwork.addressing: translate with an addressPool outside every production and on-premises range, or connectToCircuit: false"
				c.report(id, hint,
					"test network %s is connected to a circuit and its space %s overlaps production or on-premises %s: a drill would advertise production's prefixes", id, x, y)
			}
		}
	}
	for _, pe := range tn.Peerings {
		if !names[pe.From] || !names[pe.To] {
			c.report(site+"/"+pe.From+"/peerings/"+pe.Name, "remove peerings between the test network and production",
				"test peering %s joins %s to %s, outside the test network: the drill is not isolated", pe.Name, pe.From, pe.To)
		}
	}
	if cfg.ConnectToCircuit {
		return
	}
	// Isolated: no on-premises host reaches a drill machine.
	for _, o := range c.p.spec.OnPremises {
		for _, h := range o.Hosts {
			for _, m := range c.p.Machines {
				if !m.Test.IP.IsValid() {
					continue
				}
				node := m.Test.Site + "/" + m.VM + "-test"
				t, err := c.p.Trace(StateTest, o.Name+"/"+h.Name, m.Test.IP)
				if err != nil || t.Result != Delivered || t.Reason != "delivered to "+node {
					continue
				}
				c.report(node, "keep the test network unconnected (testNetwork.connectToCircuit: false) and unpeered from production",
					"drill machine %s (%s) is reachable from on-premises host %s/%s: the test network is not isolated", node, m.Test.IP, o.Name, h.Name)
			}
		}
	}
}

// splitConns returns the source and target connections of the full plan,
// by ID.
func (c *checkCtx) splitConns() (src, tgt []*Connection) {
	all := c.connByID()
	for _, id := range sortedKeys(all) {
		if all[id].Site.Role == "target" {
			tgt = append(tgt, all[id])
		} else {
			src = append(src, all[id])
		}
	}
	return src, tgt
}

func checkAS05(c *checkCtx) {
	p := c.p
	src, tgt := c.splitConns()
	for _, s := range src {
		for _, t := range tgt {
			if s.Circuit == nil || s.Circuit != t.Circuit {
				continue
			}
			if _, _, ok := overlapping(s, t); !ok {
				continue
			}
			circuit := s.Circuit.Name
			if !p.generated[t.ID()] {
				c.report(t.ID(), fmt.Sprintf("remove connection %s from %s: standby then creates it during failover, strictly after deleting %s", t.Name, c.targetNetPath(), s.ID()),
					"target connection %s is pre-provisioned on circuit %s, which source connection %s uses with the same prefixes: the plan cannot disconnect the source before the target connects", t.ID(), circuit, s.ID())
				continue
			}
			dS := runbookAction(p.Runbook, ActDeleteConn, s.ID(), PhaseBefore, PhaseFailover)
			cT := runbookAction(p.Runbook, ActCreateConn, t.ID(), PhaseBefore, PhaseFailover, PhaseAfter)
			switch {
			case dS == nil:
				c.report(s.ID(), "the runbook must delete the source connection before it creates the target one; report this runbook as a bug",
					"the runbook never disconnects %s from circuit %s before %s connects with the same prefixes", s.ID(), circuit, t.ID())
				continue
			case cT != nil && !runbookDependsOn(p.Runbook, cT.ID, dS.ID):
				c.report(t.ID(), "make create-connection of the target depend on delete-connection of the source",
					"the runbook may connect %s before %s is disconnected from circuit %s (%s does not wait for %s)", t.ID(), s.ID(), circuit, cT.ID, dS.ID)
			}
			if dS.OnFailure != "ask" && dS.OnFailure != "proceed" {
				c.report(s.ID(), "let the runbook ask an operator when the disconnect fails, or set recovery.networkMapping.connectivity.allowDisconnectFailure: true",
					"disconnecting %s fails when the source region is down, and the runbook does not say what to do then", s.ID())
			}
			if a := runbookAction(p.Runbook, ActCreateConn, s.ID(), PhaseFailover, PhaseAfter); a != nil {
				c.report(s.ID(), "keep the source connection deleted until failback",
					"the runbook reconnects %s during %s while %s holds the circuit", s.ID(), a.Phase, t.ID())
			}
			fbDel := runbookAction(p.Runbook, ActDeleteConn, t.ID(), PhaseFailback)
			fbCreate := runbookAction(p.Runbook, ActCreateConn, s.ID(), PhaseFailback)
			if fbCreate == nil || fbDel == nil || !runbookDependsOn(p.Runbook, fbCreate.ID, fbDel.ID) {
				c.report(t.ID(), "the failback phase must delete the target connection, then reconnect the source",
					"failback does not disconnect %s strictly before it reconnects %s to circuit %s", t.ID(), s.ID(), circuit)
			}
		}
	}
}

// createAction is the runbook action that makes a generated resource.
func (c *checkCtx) createAction(id string) string {
	switch {
	case strings.Contains(id, "/routeTables/"):
		return ActCreateRT
	case strings.Contains(id, "/peerings/"):
		return ActCreatePeering
	case strings.Contains(id, "/connections/"):
		return ActCreateConn
	}
	if tgt := c.targetSite(); tgt != nil {
		for _, g := range tgt.Gateways {
			if g.ID() == id {
				return ActCreateGateway
			}
		}
	}
	return "" // VNets, subnets, appliances: Site Recovery's or the network's own
}

func checkAS06(c *checkCtx) {
	p := c.p
	for _, id := range sortedKeys(p.generated) {
		kind := c.createAction(id)
		if kind == "" {
			continue
		}
		a := runbookAction(p.Runbook, kind, id)
		switch {
		case a == nil:
			c.report(id, "pre-provision it in "+c.targetNetPath()+", or report the missing runbook action as a bug",
				"%s is generated for the target, Site Recovery does not create it, and no runbook action does", id)
		case a.Estimate.Duration == 0:
			c.report(id, "give the action a duration so that the recovery-time estimate counts it",
				"the runbook creates %s (%s) without a duration, so the recovery-time estimate leaves it out", id, a.ID)
		}
	}
	// Associations of generated route tables or subnets.
	if tgt := c.targetSite(); tgt != nil {
		for _, v := range tgt.VNets {
			for _, s := range v.Subnets {
				if s.RouteTable == nil || (!p.generated[s.ID()] && !p.generated[s.RouteTable.ID()]) {
					continue
				}
				if runbookAction(p.Runbook, ActAssociateRT, s.ID()) == nil {
					c.report(s.ID(), "report the missing runbook action as a bug, or pre-provision the association",
						"subnet %s must use route table %s, and no runbook action associates it", s.ID(), s.RouteTable.Name)
				}
			}
		}
		for _, g := range tgt.Gateways {
			if !p.generated[g.ID()] && g.Provisioned != nil && !*g.Provisioned {
				c.report(g.ID(), fmt.Sprintf("create gateway %s before failover, or remove it from %s so that standby generates it and the runbook builds it", g.Name, c.targetNetPath()),
					"target gateway %s is declared but not provisioned, and no runbook action creates it", g.ID())
			}
		}
	}
	// Source resources that have no counterpart on the target.
	mapped := map[string]bool{}
	for _, e := range p.Mapping {
		mapped[e.Source] = true
	}
	for _, st := range c.sites() {
		if st.Role != "source" {
			continue
		}
		for _, g := range st.Gateways {
			if !mapped[g.ID()] {
				c.report(g.ID(), fmt.Sprintf("pre-provision a %s gateway (and its connections) in %s, or accept that the recovered site has none", g.Type, c.targetNetPath()),
					"source %s gateway %s has no counterpart on the target: Site Recovery does not create it and the runbook does not either", g.Type, g.ID())
			}
		}
		for _, pe := range st.Peerings {
			if !mapped[pe.ID()] {
				c.report(pe.ID(), fmt.Sprintf("pre-provision the matching peering (both directions) in %s", c.targetNetPath()),
					"source peering %s (%s to %s) has no counterpart on the target: Site Recovery does not create it and the runbook does not either", pe.ID(), pe.From.ID(), pe.To.ID())
			}
		}
	}
}
