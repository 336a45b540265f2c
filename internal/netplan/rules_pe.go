package netplan

import (
	"fmt"
	"net/netip"
	"strings"
)

func peRules() []Rule {
	return []Rule{
		{ID: "PE-01", Severity: SevError, Scope: ScopeTarget, Title: "peered VNets do not overlap", check: checkPE01},
		{ID: "PE-02", Severity: SevError, Scope: ScopeFailover, Title: "no VNet is peered with two VNets that overlap each other", check: checkPE02},
		{ID: "PE-03", Severity: SevError, Scope: ScopeTarget, Title: "useRemoteGateways needs no local gateway, one such peering, a remote gateway and allowGatewayTransit back", check: checkPE03},
		{ID: "PE-04", Severity: SevError, Scope: ScopeTarget, Title: "every peering has its reverse", check: checkPE04},
		{ID: "PE-05", Severity: SevWarning, Scope: ScopeTarget, Title: "target peering flags equal the source's", check: checkPE05},
		{ID: "PE-06", Severity: SevError, Scope: ScopeTarget, Title: "spoke-to-spoke traffic needs a hub appliance, routes on both spokes and allowForwardedTraffic", check: checkPE06},
		{ID: "PE-07", Severity: SevError, Scope: ScopeTarget, Title: "at most 500 peerings per VNet", check: checkPE07},
	}
}

func checkPE01(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, pe := range st.Peerings {
			if x, y, ok := prefixesOverlap(pe.From.AddressSpace, pe.To.AddressSpace); ok {
				h.report(st, SevError, "overlap", pe.ID(), fmt.Sprintf("remove peering %s, or give %s and %s address spaces that do not overlap", pe.Name, pe.From.Name, pe.To.Name),
					"peering %s joins %s (%s) and %s (%s), whose address spaces overlap", pe.Name, pe.From.ID(), x, pe.To.ID(), y)
			}
		}
	}
}

// neighbours returns the VNets peered with v in either direction, in a
// stable order.
func (c *checkCtx) neighbours(v *VNet) []*VNet {
	var out []*VNet
	seen := map[*VNet]bool{}
	for _, st := range c.sites() {
		for _, pe := range st.Peerings {
			var o *VNet
			switch v {
			case pe.From:
				o = pe.To
			case pe.To:
				o = pe.From
			}
			if o != nil && !seen[o] {
				seen[o] = true
				out = append(out, o)
			}
		}
	}
	return out
}

func checkPE02(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			ns := c.neighbours(v)
			for i, a := range ns {
				for _, b := range ns[i+1:] {
					x, y, ok := prefixesOverlap(a.AddressSpace, b.AddressSpace)
					if !ok {
						continue
					}
					hint := fmt.Sprintf("peer %s with only one of %s and %s", v.Name, a.ID(), b.ID())
					if a.Site != b.Site {
						hint += " (a target hub peers with the target spokes, never with a source spoke and its same-IP replica)"
					}
					h.report(st, SevError, "overlap:"+pairKey(h.norm(a.ID()), h.norm(b.ID())), v.ID(), hint,
						"virtual network %s is peered with %s (%s) and %s (%s), which overlap each other: it cannot route to both", v.ID(), a.ID(), x, b.ID(), y)
				}
			}
		}
	}
}

func checkPE03(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, pe := range st.Peerings {
			if !pe.UseRemoteGateways {
				continue
			}
			id := pe.ID()
			if gws := pe.From.Gateways(); len(gws) > 0 {
				h.report(st, SevError, "local", id, fmt.Sprintf("set useRemoteGateways: false on %s, or remove gateway %s from %s", pe.Name, gws[0].Name, pe.From.Name),
					"peering %s uses the remote gateways of %s, but %s has its own gateway %s", pe.Name, pe.To.ID(), pe.From.ID(), gws[0].Name)
			}
			var others []string
			for _, q := range pe.From.PeeringsFrom() {
				if q != pe && q.UseRemoteGateways {
					others = append(others, q.Name)
				}
			}
			if len(others) > 0 {
				h.report(st, SevError, "only", id, fmt.Sprintf("keep useRemoteGateways on one peering of %s", pe.From.Name),
					"%s uses remote gateways on peering %s and also on %s; a VNet may use remote gateways on one peering only", pe.From.ID(), pe.Name, strings.Join(others, ", "))
			}
			if len(pe.To.Gateways()) == 0 {
				h.report(st, SevError, "remote", id, fmt.Sprintf("add a gateway to %s, or set useRemoteGateways: false on %s", pe.To.Name, pe.Name),
					"peering %s uses the remote gateways of %s, which has no gateway", pe.Name, pe.To.ID())
			}
			if pe.Reverse == nil || !pe.Reverse.AllowGatewayTransit {
				rev := "its reverse peering"
				if pe.Reverse != nil {
					rev = "peering " + pe.Reverse.Name
				}
				h.report(st, SevError, "transit", id, fmt.Sprintf("set allowGatewayTransit: true on the peering from %s to %s", pe.To.Name, pe.From.Name),
					"peering %s uses the remote gateways of %s, but %s does not allow gateway transit", pe.Name, pe.To.ID(), rev)
			}
		}
	}
}

func checkPE04(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, pe := range st.Peerings {
			if pe.Reverse != nil {
				continue
			}
			where := "networks[site: " + pe.To.Site.Name + "]"
			to := pe.From.Name
			if pe.To.Site != pe.From.Site {
				to = pe.From.ID()
			}
			h.report(st, SevError, "reverse", pe.ID(), fmt.Sprintf("add the reverse peering {from: %s, to: %s} to %s", pe.To.Name, to, where),
				"peering %s from %s to %s has no reverse peering, so the two VNets are not connected", pe.Name, pe.From.ID(), pe.To.ID())
		}
	}
}

func checkPE05(c *checkCtx) {
	tgt := c.targetSite()
	if tgt == nil {
		return
	}
	vmap := map[string]string{}
	for _, e := range c.p.Mapping {
		if e.Kind == "virtualNetwork" {
			vmap[e.Source] = e.Target
		}
	}
	for _, st := range c.sites() {
		if st.Role != "source" {
			continue
		}
		for _, pe := range st.Peerings {
			tf, tt := vmap[pe.From.ID()], vmap[pe.To.ID()]
			if tf == "" || tt == "" {
				continue
			}
			for _, q := range tgt.Peerings {
				if q.From.ID() != tf || q.To.ID() != tt {
					continue
				}
				var diff []string
				for _, f := range []struct {
					name string
					s, t bool
				}{
					{"allowVirtualNetworkAccess", pe.AllowVirtualNetworkAccess, q.AllowVirtualNetworkAccess},
					{"allowForwardedTraffic", pe.AllowForwardedTraffic, q.AllowForwardedTraffic},
					{"allowGatewayTransit", pe.AllowGatewayTransit, q.AllowGatewayTransit},
					{"useRemoteGateways", pe.UseRemoteGateways, q.UseRemoteGateways},
				} {
					if f.s != f.t {
						diff = append(diff, fmt.Sprintf("%s %v (source %v)", f.name, f.t, f.s))
					}
				}
				if len(diff) > 0 {
					c.report(q.ID(), fmt.Sprintf("set the flags of peering %s in %s to the source's, or remove it so that standby generates it", q.Name, c.targetNetPath()),
						"target peering %s differs from source peering %s: %s; traffic after failover will not behave as before", q.ID(), pe.ID(), strings.Join(diff, ", "))
				}
			}
		}
	}
}

// userRoute returns the user route of a subnet's table that covers all of
// p, longest first.
func userRoute(s *Subnet, p netip.Prefix) (Route, bool) {
	if s.RouteTable == nil {
		return Route{}, false
	}
	var rs []Route
	for _, r := range s.RouteTable.Routes {
		if r.AddressPrefix.Bits() <= p.Bits() {
			rs = append(rs, Route{Prefix: r.AddressPrefix.Prefix, Kind: kindUser, NextHopType: r.NextHopType, NextHopIP: r.NextHopIPAddress.Addr, Name: s.RouteTable.Name + "/" + r.Name})
		}
	}
	return pick(rs, p.Addr())
}

// directlyPeered reports whether a and b have a peering in either direction.
func directlyPeered(a, b *VNet) bool {
	for _, st := range []*Site{a.Site, b.Site} {
		for _, pe := range st.Peerings {
			if (pe.From == a && pe.To == b) || (pe.From == b && pe.To == a) {
				return true
			}
		}
	}
	return false
}

// applianceIn returns the appliance with address ip in v, or nil.
func applianceIn(v *VNet, ip netip.Addr) *Appliance {
	for _, ap := range v.Site.Appliances {
		if ap.VNet == v && ap.IP == ip {
			return ap
		}
	}
	return nil
}

func checkPE06(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, a := range st.VNets {
			for _, ah := range a.PeeringsFrom() {
				hub := ah.To
				for _, hb := range hub.PeeringsFrom() {
					b := hb.To
					if b == a || directlyPeered(a, b) {
						continue
					}
					for _, sa := range a.Subnets {
						for _, pb := range b.AddressSpace {
							r, ok := userRoute(sa, pb)
							if !ok || r.NextHopType != "VirtualAppliance" {
								continue
							}
							ap := applianceIn(hub, r.NextHopIP)
							if ap == nil {
								continue
							}
							// Subnet sa sends traffic for b through the hub's appliance.
							c.checkTransit(h, sa, a, b, hub, ap, ah, pb)
						}
					}
				}
			}
		}
	}
}

// checkTransit checks one spoke-to-spoke path a -> hub appliance -> b.
func (c *checkCtx) checkTransit(h *inherit, sa *Subnet, a, b, hub *VNet, ap *Appliance, ah *Peering, pb netip.Prefix) {
	st := a.Site
	if !ah.AllowForwardedTraffic {
		h.report(st, SevError, "fwd", ah.ID(), fmt.Sprintf("set allowForwardedTraffic: true on peering %s", ah.Name),
			"%s reaches %s through appliance %s in %s, but peering %s does not allow forwarded traffic, so the replies %s forwards are dropped", a.ID(), b.ID(), ap.Name, hub.ID(), ah.Name, ap.Name)
	}
	var bh *Peering
	for _, q := range b.PeeringsFrom() {
		if q.To == hub {
			bh = q
		}
	}
	if bh != nil && !bh.AllowForwardedTraffic {
		h.report(b.Site, SevError, "fwd", bh.ID(), fmt.Sprintf("set allowForwardedTraffic: true on peering %s", bh.Name),
			"%s sends traffic to %s through appliance %s in %s, but peering %s does not allow forwarded traffic, so %s drops it", a.ID(), b.ID(), ap.Name, hub.ID(), bh.Name, b.ID())
	}
	for _, sb := range b.Subnets {
		if sb.Name == "GatewaySubnet" {
			continue
		}
		back, ok := userRoute(sb, sa.Prefix)
		if ok && back.NextHopType == "VirtualAppliance" && applianceIn(hub, back.NextHopIP) != nil {
			continue
		}
		why := "it has no route for " + sa.Prefix.String()
		if ok {
			why = "its route " + back.Name + " sends " + sa.Prefix.String() + " to " + back.NextHopType
		}
		h.report(b.Site, SevError, "return:"+h.norm(sa.ID()), sb.ID(), fmt.Sprintf("add a route for %s with nextHopType VirtualAppliance and nextHopIpAddress %s to the route table of %s", sa.Prefix, ap.IP, sb.Name),
			"%s sends traffic for %s through appliance %s, but subnet %s cannot answer: %s, and peering is not transitive", sa.ID(), pb, ap.ID(), sb.ID(), why)
	}
}

func checkPE07(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			if v.ERGateway() != nil {
				continue // GW-07 counts a hub's peerings
			}
			if n := len(v.PeeringsFrom()); n > 500 {
				h.report(st, SevError, "count", v.ID(), fmt.Sprintf("peer %s with at most 500 VNets; group them behind hubs", v.Name),
					"virtual network %s has %d peerings; Azure allows 500", v.ID(), n)
			}
		}
	}
}
