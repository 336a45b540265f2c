package netplan

import (
	"fmt"
	"slices"
	"strings"
)

func gwRules() []Rule {
	return []Rule{
		{ID: "GW-01", Severity: SevError, Scope: ScopeTarget, Title: "a VNet with a gateway has a GatewaySubnet of /27 or larger (/26 for 16 circuits)", check: checkGW01},
		{ID: "GW-02", Severity: SevError, Scope: ScopeTarget, Title: "GatewaySubnet has no NSG, no 0.0.0.0/0 route, and BGP propagation on", check: checkGW02},
		{ID: "GW-03", Severity: SevError, Scope: ScopeTarget, Title: "at most one ExpressRoute and one VPN gateway per VNet", check: checkGW03},
		{ID: "GW-04", Severity: SevError, Scope: ScopeTarget, Title: "the target gateway's SKU is at least the source's", check: checkGW04},
		{ID: "GW-05", Severity: SevError, Scope: ScopeTarget, Title: "gateway public IP SKU is Standard", check: checkGW05},
		{ID: "GW-06", Severity: SevWarning, Scope: ScopeTarget, Title: "a target gateway not provisioned before failover adds 45 minutes or more", check: checkGW06},
		{ID: "GW-07", Severity: SevError, Scope: ScopeTarget, Title: "a hub with an ExpressRoute gateway has at most 500 peerings", check: checkGW07},
	}
}

func checkGW01(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			gws := v.Gateways()
			if len(gws) == 0 {
				continue
			}
			gs := v.GatewaySubnet()
			if gs == nil {
				for _, sn := range v.Subnets {
					if strings.EqualFold(sn.Name, "GatewaySubnet") {
						gs = sn
					}
				}
				if gs != nil {
					h.report(st, SevError, "name", gs.ID(), fmt.Sprintf("rename subnet %s of %s to exactly GatewaySubnet", gs.Name, v.Name),
						"gateway %s needs a subnet named exactly GatewaySubnet; %s has %q", gws[0].ID(), v.ID(), gs.Name)
				} else {
					h.report(st, SevError, "missing", v.ID(), fmt.Sprintf("add a subnet named GatewaySubnet, /27 or larger, to virtual network %s", v.Name),
						"virtual network %s has gateway %s but no GatewaySubnet", v.ID(), gws[0].ID())
				}
				continue
			}
			want := 27
			if g := v.ERGateway(); g != nil {
				n := 0
				for _, cn := range st.Connections {
					if cn.Gateway == g {
						n++
					}
				}
				if n > 8 {
					want = 26
				}
			}
			if gs.Prefix.Bits() > want {
				why := ""
				if want == 26 {
					why = " (its gateway connects more than 8 circuits, and 16 circuits need /26)"
				}
				h.report(st, SevError, "size", gs.ID(), fmt.Sprintf("make GatewaySubnet of %s a /%d or larger", v.Name, want),
					"GatewaySubnet of %s is %s; a gateway needs /%d or larger%s", v.ID(), gs.Prefix, want, why)
			}
		}
	}
}

func checkGW02(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			gs := v.GatewaySubnet()
			if gs == nil {
				continue
			}
			if gs.NSG != "" {
				h.report(st, SevError, "nsg", gs.ID(), "remove networkSecurityGroup from the GatewaySubnet",
					"GatewaySubnet of %s has network security group %s; a gateway subnet must have none", v.ID(), gs.NSG)
			}
			rt := gs.RouteTable
			if rt == nil {
				continue
			}
			for _, r := range rt.Routes {
				if r.AddressPrefix.Bits() == 0 {
					h.report(st, SevError, "default", rt.ID()+"/routes/"+r.Name, fmt.Sprintf("remove route %s from route table %s, or give the GatewaySubnet a table without a default route", r.Name, rt.Name),
						"GatewaySubnet of %s uses route table %s, whose route %s sends 0.0.0.0/0 to %s; the gateway subnet must not have a default route", v.ID(), rt.Name, r.Name, r.NextHopType)
				}
			}
			if rt.DisableBgpRoutePropagation {
				h.report(st, SevError, "bgp", gs.ID(), fmt.Sprintf("set disableBgpRoutePropagation: false on route table %s, or give the GatewaySubnet its own table", rt.Name),
					"GatewaySubnet of %s uses route table %s, which disables BGP route propagation; the gateway must learn routes", v.ID(), rt.Name)
			}
		}
	}
}

func checkGW03(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			byType := map[string][]string{}
			for _, g := range v.Gateways() {
				byType[g.Type] = append(byType[g.Type], g.Name)
			}
			for _, typ := range sortedKeys(byType) {
				if names := byType[typ]; len(names) > 1 {
					slices.Sort(names)
					h.report(st, SevError, typ, v.ID(), fmt.Sprintf("keep one %s gateway in %s", typ, v.Name),
						"virtual network %s has %d %s gateways (%s); Azure allows one", v.ID(), len(names), typ, strings.Join(names, ", "))
				}
			}
		}
	}
}

// gwTier is what an ExpressRoute gateway SKU carries.
type gwTier struct {
	rank, circuits, mbps, vms, routes int
}

func erTier(sku string) (gwTier, bool) {
	switch sku {
	case "Standard", "ErGw1AZ":
		return gwTier{1, 4, 1000, 2000, 4000}, true
	case "HighPerformance", "ErGw2AZ":
		return gwTier{2, 8, 2000, 4500, 9500}, true
	case "UltraPerformance", "ErGw3AZ", "ErGwScale":
		return gwTier{3, 16, 10000, 11000, 60000}, true
	}
	return gwTier{}, false
}

// gatewayUsers returns v and the VNets that use v's gateway through
// useRemoteGateways.
func gatewayUsers(v *VNet) []*VNet {
	out := []*VNet{v}
	for _, pe := range v.Site.Peerings {
		if pe.To == v && pe.UseRemoteGateways && !slices.Contains(out, pe.From) {
			out = append(out, pe.From)
		}
	}
	return out
}

func checkGW04(c *checkCtx) {
	if c.p.hub == nil || c.p.Topology.TargetHub == "" {
		return
	}
	src := c.vnetByID(c.p.hub.ID())
	tgt := c.vnetByID(c.p.Topology.TargetHub)
	if src == nil || tgt == nil {
		return
	}
	sg, tg := src.ERGateway(), tgt.ERGateway()
	if sg == nil || tg == nil {
		return
	}
	st, okS := erTier(sg.Sku)
	tt, okT := erTier(tg.Sku)
	if !okS || !okT {
		return
	}
	hint := fmt.Sprintf("set recovery.networkMapping.connectivity.gatewaySku to %s (the source's) or larger", sg.Sku)
	if !c.p.generated[tg.ID()] {
		hint = fmt.Sprintf("raise the SKU of gateway %s in %s to %s (the source's) or larger", tg.Name, c.targetNetPath(), sg.Sku)
	}
	// What the target gateway must carry: the recovered machines behind it
	// and the routes learned from on-premises over its circuits.
	users := gatewayUsers(tgt)
	vms := map[string]bool{}
	for _, m := range c.p.Machines {
		if m.Target.Site == tgt.Site.Name && slices.ContainsFunc(users, func(v *VNet) bool { return v.Name == m.Target.VNet }) {
			vms[m.VM] = true
		}
	}
	routes := 0
	counted := map[string]bool{}
	for _, cn := range tgt.Site.Connections {
		if cn.Gateway == tg && cn.Circuit != nil && !counted[cn.Circuit.Name] {
			counted[cn.Circuit.Name] = true
			routes += c.onPremPrefixCount(cn.Circuit)
		}
	}
	failed := false
	if len(vms) > tt.vms {
		failed = true
		c.reportAs(SevError, ScopeTarget, tg.ID(), hint,
			"target gateway %s (%s) serves at most %d virtual machines, but %d fail over behind it", tg.ID(), tg.Sku, tt.vms, len(vms))
	}
	if routes > tt.routes {
		failed = true
		c.reportAs(SevError, ScopeTarget, tg.ID(), hint,
			"target gateway %s (%s) learns at most %d routes, but on-premises advertises %d over its circuits", tg.ID(), tg.Sku, tt.routes, routes)
	}
	if !failed && tt.rank < st.rank {
		c.reportAs(SevWarning, ScopeTarget, tg.ID(), hint,
			"target gateway %s is %s, smaller than the source's %s (%d circuits, about %d Mbps, %d VMs, %d learned routes against %d, %d, %d, %d): the recovered site gets less than production",
			tg.ID(), tg.Sku, sg.Sku, tt.circuits, tt.mbps, tt.vms, tt.routes, st.circuits, st.mbps, st.vms, st.routes)
	}
}

func checkGW05(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, g := range st.Gateways {
			if g.PublicIPSku != "" && g.PublicIPSku != "Standard" {
				h.report(st, SevError, "sku", g.ID(), fmt.Sprintf("set publicIpSku: Standard on gateway %s", g.Name),
					"gateway %s has a %s public IP; gateways need a Standard public IP", g.ID(), g.PublicIPSku)
			}
		}
	}
}

func checkGW06(c *checkCtx) {
	st := c.targetSite()
	if st == nil {
		return
	}
	for _, g := range st.Gateways {
		id := g.ID()
		if c.p.generated[id] {
			a := runbookAction(c.p.Runbook, ActCreateGateway, id)
			if a == nil || a.Phase == PhaseBefore {
				continue // a missing action is AS-06's
			}
			c.report(id, "leave recovery.networkMapping.connectivity.provisionBeforeFailover at true, so the gateway is built before failover",
				"target gateway %s is created during %s: that adds 45 minutes or more to the recovery time, and the plan's timeouts must allow 90 minutes for it", id, a.Phase)
			continue
		}
		if g.Provisioned != nil && !*g.Provisioned {
			c.report(id, fmt.Sprintf("create gateway %s before failover (then drop provisioned: false), or remove it from %s so that standby generates and builds it ahead", g.Name, c.targetNetPath()),
				"target gateway %s is declared but not provisioned: creating it at failover adds 45 minutes or more to the recovery time, and timeouts must allow 90 minutes", id)
		}
	}
}

func checkGW07(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			g := v.ERGateway()
			if g == nil {
				continue
			}
			if n := len(v.PeeringsFrom()); n > 500 {
				h.report(st, SevError, "count", v.ID(), "split the spokes across hubs: a hub with an ExpressRoute gateway peers with at most 500 VNets",
					"hub %s has ExpressRoute gateway %s and %d peerings; the limit is 500", v.ID(), g.Name, n)
			}
		}
	}
}
