package netplan

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/standby-dr/standby/internal/spec"
)

func rtRules() []Rule {
	return []Rule{
		{ID: "RT-01", Severity: SevError, Scope: ScopeTarget, Title: "every VirtualAppliance next hop is an appliance the route's VNet reaches directly", check: checkRT01},
		{ID: "RT-02", Severity: SevError, Scope: ScopeTarget, Title: "no VirtualNetworkGateway next hop behind an ExpressRoute gateway; nextHopIpAddress only with VirtualAppliance", check: checkRT02},
		{ID: "RT-03", Severity: SevWarning, Scope: ScopeTarget, Title: "an appliance's own subnet does not route back to it", check: checkRT03},
		{ID: "RT-04", Severity: SevError, Scope: ScopeTarget, Title: "at most 400 routes per table", check: checkRT04},
		{ID: "RT-05", Severity: SevWarning, Scope: ScopeSource, Title: "replication traffic of protected subnets does not go through an appliance or on-premises", check: checkRT05},
		{ID: "RT-06", Severity: SevWarning, Scope: ScopeTarget, Title: "every declared check reaches its service in the target state", check: checkRT06},
		{ID: "RT-07", Severity: SevWarning, Scope: ScopeTarget, Title: "no target route names a source-only prefix or appliance address", check: checkRT07},
	}
}

// subnetsUsing returns the subnets of a site that use route table rt.
func subnetsUsing(st *Site, rt *RouteTable) []*Subnet {
	var out []*Subnet
	for _, v := range st.VNets {
		for _, s := range v.Subnets {
			if s.RouteTable == rt {
				out = append(out, s)
			}
		}
	}
	return out
}

// reaches reports whether v reaches w directly: the same VNet, or a
// connected peering that gives access.
func reaches(v, w *VNet) bool {
	if v == w {
		return true
	}
	for _, pe := range v.PeeringsFrom() {
		if pe.To == w && pe.Connected() && pe.AllowVirtualNetworkAccess {
			return true
		}
	}
	return false
}

// sourceAppliance returns the source appliance with address a, or nil.
func (c *checkCtx) sourceAppliance(a netip.Addr) *Appliance {
	for _, st := range c.sites() {
		if st.Role == "source" {
			if ap := st.Appliance(a); ap != nil {
				return ap
			}
		}
	}
	return nil
}

func checkRT01(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, rt := range st.RouteTables {
			for _, r := range rt.Routes {
				if r.NextHopType != spec.NextHopVirtualAppliance {
					continue
				}
				id := rt.ID() + "/routes/" + r.Name
				ip := r.NextHopIPAddress.Addr
				if !ip.IsValid() {
					h.report(st, SevError, "noip", id, fmt.Sprintf("give route %s a nextHopIpAddress: the appliance's address", r.Name),
						"route %s of %s has next hop VirtualAppliance but no nextHopIpAddress", r.Name, rt.ID())
					continue
				}
				ap := st.Appliance(ip)
				if ap == nil {
					msg := fmt.Sprintf("route %s of %s sends %s to %s, which is no appliance of site %s", r.Name, rt.ID(), r.AddressPrefix, ip, st.Name)
					hint := fmt.Sprintf("point route %s at an appliance of site %s (appliances[].ipAddress), or declare the appliance", r.Name, st.Name)
					if st.Role == "target" && !c.p.SameIPs() {
						if sa := c.sourceAppliance(ip); sa != nil {
							msg += fmt.Sprintf(": it is the untranslated address of source appliance %s", sa.ID())
							hint = "translate the next hop: use the target appliance's address, or add an addressTranslation pair that covers " + ip.String()
						}
					}
					h.report(st, SevError, "noappliance", id, hint, "%s", msg)
					continue
				}
				var far []string
				for _, s := range subnetsUsing(st, rt) {
					if ap.VNet != nil && !reaches(s.VNet, ap.VNet) {
						far = append(far, s.ID())
					}
				}
				if len(far) > 0 {
					h.report(st, SevError, "reach", id, fmt.Sprintf("peer %s's VNets with %s (both directions, allowVirtualNetworkAccess), or use an appliance in a VNet they reach directly", rt.Name, ap.VNet.Name),
						"route %s sends %s to appliance %s, but %s cannot reach %s directly (same VNet or a peering), and traffic cannot reach an appliance through a gateway; the route's subnets affected: %s", r.Name, r.AddressPrefix, ap.ID(), vnetOfSubnets(far), ap.VNet.ID(), strings.Join(far, ", "))
				}
			}
		}
	}
}

// vnetOfSubnets names the VNets of subnet IDs (site/vnet/subnets/name).
func vnetOfSubnets(ids []string) string {
	var out []string
	for _, id := range ids {
		v, _, _ := strings.Cut(id, "/subnets/")
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return strings.Join(out, " and ")
}

// gatewaysOf returns the gateways a VNet's subnets use: its own, and its
// hub's through useRemoteGateways.
func gatewaysOf(v *VNet) []*Gateway {
	out := v.Gateways()
	for _, pe := range v.PeeringsFrom() {
		if pe.UseRemoteGateways {
			out = append(out, pe.To.Gateways()...)
		}
	}
	return out
}

func checkRT02(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, rt := range st.RouteTables {
			for _, r := range rt.Routes {
				id := rt.ID() + "/routes/" + r.Name
				if r.NextHopIPAddress.IsValid() && r.NextHopType != spec.NextHopVirtualAppliance {
					h.report(st, SevError, "ip", id, fmt.Sprintf("remove nextHopIpAddress from route %s, or make its next hop VirtualAppliance", r.Name),
						"route %s of %s has nextHopIpAddress %s with next hop %s; an address goes only with VirtualAppliance", r.Name, rt.ID(), r.NextHopIPAddress, r.NextHopType)
				}
				if r.NextHopType != spec.NextHopVirtualNetworkGateway {
					continue
				}
				var users []string
				var g *Gateway
				for _, s := range subnetsUsing(st, rt) {
					for _, x := range gatewaysOf(s.VNet) {
						if x.Type == "ExpressRoute" {
							users, g = append(users, s.ID()), x
							break
						}
					}
				}
				if g != nil {
					h.report(st, SevError, "ergw", id, fmt.Sprintf("remove route %s: routes over ExpressRoute come by BGP; to send traffic on-premises, let on-premises advertise the prefix (0.0.0.0/0 for forced tunnelling)", r.Name),
						"route %s sends %s to VirtualNetworkGateway, but the subnets using it (%s) reach on-premises through ExpressRoute gateway %s, which does not take user routes to the gateway", r.Name, r.AddressPrefix, strings.Join(users, ", "), g.ID())
				}
			}
		}
	}
}

func checkRT03(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, ap := range st.Appliances {
			if ap.Subnet == nil || ap.Subnet.RouteTable == nil {
				continue
			}
			rt := ap.Subnet.RouteTable
			for _, r := range rt.Routes {
				if r.NextHopType == spec.NextHopVirtualAppliance && r.NextHopIPAddress.Addr == ap.IP {
					h.report(st, SevWarning, "loop", rt.ID()+"/routes/"+r.Name, fmt.Sprintf("give subnet %s a route table without routes to %s (or none)", ap.Subnet.Name, ap.IP),
						"appliance %s sits in subnet %s, whose route table %s sends %s back to the appliance itself: what it forwards there loops", ap.ID(), ap.Subnet.ID(), rt.Name, r.AddressPrefix)
				}
			}
		}
	}
}

func checkRT04(c *checkCtx) {
	h := c.inheriting()
	for _, st := range c.sites() {
		for _, rt := range st.RouteTables {
			if n := len(rt.Routes); n > 400 {
				h.report(st, SevError, "count", rt.ID(), fmt.Sprintf("keep route table %s at 400 routes or fewer; summarise prefixes", rt.Name),
					"route table %s has %d routes; Azure allows 400", rt.ID(), n)
			}
		}
	}
}

// defaultRoute returns the route a subnet uses for 0.0.0.0/0 in a world.
func (c *checkCtx) defaultRoute(w *world, s *Subnet) (Route, bool) {
	var best Route
	found := false
	for _, r := range w.effectiveRoutes(s, c.p.spec.OnPremises) {
		if r.Prefix.Bits() == 0 && r.Prefix.Addr().Is4() && (!found || r.Kind > best.Kind) {
			best, found = r, true
		}
	}
	return best, found
}

func checkRT05(c *checkCtx) {
	type where struct {
		state string
		place func(MachineMap) Placement
	}
	fired := map[string]bool{}
	for _, wh := range []where{{StateSource, func(m MachineMap) Placement { return m.Source }}, {StateTarget, func(m MachineMap) Placement { return m.Target }}} {
		w := c.world(wh.state)
		seen := map[string]bool{}
		for _, m := range c.p.Machines {
			pl := wh.place(m)
			st := w.sites[pl.Site]
			if st == nil {
				continue
			}
			v := st.VNet(pl.VNet)
			if v == nil {
				continue
			}
			s := v.Subnet(pl.Subnet)
			if s == nil || seen[s.ID()] {
				continue
			}
			seen[s.ID()] = true
			if slices.ContainsFunc(s.ServiceEndpoints, func(e string) bool { return strings.EqualFold(e, "Microsoft.Storage") }) {
				continue
			}
			r, ok := c.defaultRoute(w, s)
			if !ok || (r.NextHopType != "VirtualAppliance" && r.NextHopType != "VirtualNetworkGateway") {
				continue
			}
			via := "on-premises through the gateway"
			if r.NextHopType == "VirtualAppliance" {
				via = "appliance " + r.NextHopIP.String()
			}
			if wh.state == StateSource {
				fired[s.ID()] = true
				c.reportAs(SevWarning, ScopeSource, s.ID(), fmt.Sprintf("add serviceEndpoints: [Microsoft.Storage] to subnet %s, so that replication goes straight to storage", s.Name),
					"subnet %s holds protected machines and sends 0.0.0.0/0 to %s (%s) without the Microsoft.Storage service endpoint: replication traffic goes the same way and may overload it", s.ID(), via, r.Name)
				continue
			}
			if src := c.sourceOf(s.ID()); src != "" && fired[src] {
				continue
			}
			c.reportAs(SevWarning, ScopeTarget, s.ID(), fmt.Sprintf("add serviceEndpoints: [Microsoft.Storage] to subnet %s", s.Name),
				"after failover, subnet %s holds the recovered machines and sends 0.0.0.0/0 to %s (%s) without the Microsoft.Storage service endpoint: replication back for failback goes the same way", s.ID(), via, r.Name)
		}
	}
}

// checkTarget returns the IP a check probes, or an explanation.
func checkTarget(ch *spec.Check) (netip.Addr, string) {
	host := ""
	if ch.HTTP != "" {
		u, err := url.Parse(ch.HTTP)
		if err != nil {
			return netip.Addr{}, fmt.Sprintf("%q is not a URL", ch.HTTP)
		}
		host = u.Hostname()
	} else {
		h, _, err := strings.Cut(ch.TCP, ":")
		if !err {
			return netip.Addr{}, fmt.Sprintf("%q is not host:port", ch.TCP)
		}
		if ap, e := netip.ParseAddrPort(ch.TCP); e == nil {
			return ap.Addr(), ""
		}
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Sprintf("%q is a name, not an address", host)
	}
	return a, ""
}

func checkRT06(c *checkCtx) {
	for _, pl := range c.p.spec.Recovery.Plans {
		for _, g := range pl.Groups {
			for i, a := range g.Post {
				ch := a.Check
				if ch == nil {
					continue
				}
				id := fmt.Sprintf("%s/%s/post[%d]", pl.Name, g.Name, i)
				dst, why := checkTarget(ch)
				if why != "" {
					c.reportAs(SevInfo, ScopeTarget, id, "write the check with an IP address so that it can be traced before failover",
						"check from %s cannot be traced: %s", ch.From, why)
					continue
				}
				t, err := c.p.Trace(StateTarget, ch.From, dst)
				if err != nil {
					c.reportAs(SevInfo, ScopeTarget, id, "name an on-premises host or a protected machine in check.from", "check from %s to %s cannot be traced: %v", ch.From, dst, err)
					continue
				}
				if t.Result == Dropped {
					c.report(id, "fix the path the trace shows (standby net trace --state target), or correct the check's address",
						"check from %s to %s will fail after failover: the trace is dropped: %s", ch.From, dst, t.Reason)
				}
			}
		}
	}
}

func checkRT07(c *checkCtx) {
	tgt := c.targetSite()
	if tgt == nil {
		return
	}
	var srcSpace, tgtSpace []netip.Prefix
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			if st.Role == "target" {
				tgtSpace = append(tgtSpace, v.AddressSpace...)
			} else {
				srcSpace = append(srcSpace, v.AddressSpace...)
			}
		}
	}
	sourceOnly := func(p netip.Prefix) bool {
		if p.Bits() == 0 {
			return false
		}
		_, _, inSrc := prefixesOverlap([]netip.Prefix{p}, srcSpace)
		_, _, inTgt := prefixesOverlap([]netip.Prefix{p}, tgtSpace)
		return inSrc && !inTgt
	}
	fix := func(p netip.Prefix) string {
		if tp, err := c.p.tr.prefix(p); err == nil && !c.p.SameIPs() {
			return ", the translated " + tp.String()
		}
		return ""
	}
	for _, rt := range tgt.RouteTables {
		for _, r := range rt.Routes {
			id := rt.ID() + "/routes/" + r.Name
			if p := r.AddressPrefix.Prefix; sourceOnly(p) {
				c.report(id, fmt.Sprintf("change route %s's addressPrefix to the target's range%s", r.Name, fix(p)),
					"target route %s names %s, a prefix that exists only in the source networks (a stale copy)", id, p)
			}
			if ip := r.NextHopIPAddress.Addr; ip.IsValid() && sourceOnly(netip.PrefixFrom(ip, ip.BitLen())) {
				what := "an address of the source networks"
				if sa := c.sourceAppliance(ip); sa != nil {
					what = "the address of source appliance " + sa.ID()
				}
				to := ""
				if ta, err := c.p.tr.addr(ip); err == nil && !c.p.SameIPs() {
					to = ", the translated " + ta.String()
				}
				c.report(id, fmt.Sprintf("change route %s's nextHopIpAddress to the target appliance's address%s", r.Name, to),
					"target route %s sends traffic to %s, %s (a stale copy)", id, ip, what)
			}
		}
	}
}
