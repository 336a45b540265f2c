package netplan

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/standby-dr/standby/internal/spec"
)

// Hop is one step of a trace: where the packet is, the route that matched
// there, and where it goes next.
type Hop struct {
	Node    string `json:"node"`
	Route   string `json:"route"`
	NextHop string `json:"nextHop"`
}

// Trace results.
const (
	Delivered = "delivered"
	Dropped   = "dropped"
)

// Trace follows one packet hop by hop.
type Trace struct {
	State  string `json:"state"`
	From   string `json:"from"`
	To     string `json:"to"`
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	Hops   []Hop  `json:"hops"`
}

// Route kinds, in the order Azure prefers them on equal prefixes: a user
// route beats the VNet's own and peered spaces, which BGP cannot override,
// which beat BGP, which beats the remaining system routes.
const (
	kindSystemDefault = iota
	kindBGP
	kindSystemVNet
	kindUser
)

// Route is one entry of a subnet's effective route table.
type Route struct {
	Prefix      netip.Prefix
	Kind        int
	NextHopType string // VnetLocal, VNetPeering, VirtualNetworkGateway, VirtualAppliance, Internet, None
	NextHopIP   netip.Addr
	Peering     *Peering
	Gateway     *Gateway
	Name        string // route table/route, or a description
}

func (r Route) String() string {
	src := map[int]string{kindUser: "user", kindBGP: "BGP", kindSystemVNet: "system", kindSystemDefault: "system"}[r.Kind]
	nh := r.NextHopType
	if r.NextHopIP.IsValid() {
		nh += " " + r.NextHopIP.String()
	}
	return fmt.Sprintf("%s -> %s (%s: %s)", r.Prefix, nh, src, r.Name)
}

// gatewaysFor returns the gateways whose routes a subnet of v learns: v's own,
// or its hub's through useRemoteGateways.
func (w *world) gatewaysFor(v *VNet) []*Gateway {
	var out []*Gateway
	if g := v.ERGateway(); g != nil {
		out = append(out, g)
	}
	for _, pe := range v.Site.Peerings {
		if pe.From == v && pe.UseRemoteGateways && pe.Reverse != nil && pe.Reverse.AllowGatewayTransit {
			if g := pe.To.ERGateway(); g != nil {
				out = append(out, g)
			}
		}
	}
	return out
}

// activeConnections returns the connections of g that carry traffic.
func (w *world) activeConnections(g *Gateway) []*Connection {
	var out []*Connection
	for _, c := range g.Site.Connections {
		if c.Gateway == g && c.Circuit != nil && c.Circuit.IsEnabled() && c.Circuit.ProvisioningState == "Provisioned" {
			out = append(out, c)
		}
	}
	return out
}

// allConnections returns every active connection in the world.
func (w *world) allConnections() []*Connection {
	var out []*Connection
	for _, st := range sortedSites(w.sites) {
		for _, g := range st.Gateways {
			out = append(out, w.activeConnections(g)...)
		}
	}
	return out
}

// EffectiveRoutes computes a subnet's routes in this world.
func (w *world) effectiveRoutes(s *Subnet, onprem []spec.OnPremises) []Route {
	v := s.VNet
	var rs []Route
	for _, p := range v.AddressSpace {
		rs = append(rs, Route{Prefix: p, Kind: kindSystemVNet, NextHopType: "VnetLocal", Name: "virtual network " + v.Name})
	}
	for _, pe := range v.Site.Peerings {
		if pe.From != v || !pe.Connected() || !pe.AllowVirtualNetworkAccess {
			continue
		}
		for _, p := range pe.To.AddressSpace {
			rs = append(rs, Route{Prefix: p, Kind: kindSystemVNet, NextHopType: "VNetPeering", Peering: pe, Name: "peering " + pe.Name})
		}
	}
	bgp := s.RouteTable == nil || !s.RouteTable.DisableBgpRoutePropagation
	if bgp {
		for _, g := range w.gatewaysFor(v) {
			for _, c := range w.activeConnections(g) {
				for _, o := range onprem {
					if o.Name != c.Circuit.OnPremises {
						continue
					}
					for _, p := range o.AddressSpace {
						rs = append(rs, Route{Prefix: p.Prefix, Kind: kindBGP, NextHopType: "VirtualNetworkGateway", Gateway: g, Name: "learned from " + o.Name + " over " + c.Circuit.Name})
					}
				}
				// Other hubs on the same circuit are heard too.
				for _, other := range w.allConnections() {
					if other.Circuit == c.Circuit && other.Gateway != g && other.Gateway.VNet != nil {
						for _, p := range Advertised(other.Gateway.VNet) {
							rs = append(rs, Route{Prefix: p, Kind: kindBGP, NextHopType: "VirtualNetworkGateway", Gateway: g, Name: "learned from " + other.Gateway.ID() + " over " + c.Circuit.Name})
						}
					}
				}
			}
		}
	}
	if s.RouteTable != nil {
		for _, r := range s.RouteTable.Routes {
			rs = append(rs, Route{Prefix: r.AddressPrefix.Prefix, Kind: kindUser, NextHopType: r.NextHopType, NextHopIP: r.NextHopIPAddress.Addr, Name: s.RouteTable.Name + "/" + r.Name})
		}
	}
	rs = append(rs, Route{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Kind: kindSystemDefault, NextHopType: "Internet", Name: "default"})
	return rs
}

// pick returns the route for dst: longest prefix, then kind.
func pick(rs []Route, dst netip.Addr) (Route, bool) {
	best := -1
	for i, r := range rs {
		if !r.Prefix.Contains(dst) {
			continue
		}
		if best < 0 || r.Prefix.Bits() > rs[best].Prefix.Bits() || (r.Prefix.Bits() == rs[best].Prefix.Bits() && r.Kind > rs[best].Kind) {
			best = i
		}
	}
	if best < 0 {
		return Route{}, false
	}
	return rs[best], true
}

// tracer carries one packet.
type tracer struct {
	p    *Plan
	w    *world
	t    *Trace
	src  netip.Addr
	dst  netip.Addr
	seen map[string]bool
}

// Trace follows a packet from `from` (onprem/host, site/vm or an IP) to dst
// in a state. An unknown from or state is an error; everything else is a
// trace that ends delivered or dropped.
func (p *Plan) Trace(state, from string, dst netip.Addr) (*Trace, error) {
	if !validState(state) {
		return nil, fmt.Errorf("unknown state %q: want one of %s", state, strings.Join(States, ", "))
	}
	w := p.world(state)
	tr := &tracer{p: p, w: w, t: &Trace{State: state, From: from, To: dst.String(), Hops: []Hop{}}, dst: dst, seen: map[string]bool{}}
	if o, h, ok := p.onpremHost(from); ok {
		tr.src = h.IPAddress.Addr
		tr.fromOnPrem(o, from)
		return tr.t, nil
	}
	m, err := p.findMachine(w, from)
	if err != nil {
		return nil, err
	}
	tr.src = m.IP
	tr.atNIC(m.Name, m.Subnet)
	return tr.t, nil
}

func validState(s string) bool {
	for _, x := range States {
		if x == s {
			return true
		}
	}
	return false
}

func (p *Plan) onpremHost(from string) (spec.OnPremises, spec.Host, bool) {
	site, host, ok := strings.Cut(from, "/")
	for _, o := range p.spec.OnPremises {
		for _, h := range o.Hosts {
			if ok && o.Name == site && h.Name == host {
				return o, h, true
			}
			if a, err := netip.ParseAddr(from); err == nil && h.IPAddress.Addr == a {
				return o, h, true
			}
		}
	}
	return spec.OnPremises{}, spec.Host{}, false
}

// findMachine resolves site/vm (the VM's spec site names it in every state:
// after failover it runs at the target), site/appliance, or an IP.
func (p *Plan) findMachine(w *world, from string) (*machine, error) {
	if a, err := netip.ParseAddr(from); err == nil {
		for _, m := range w.machines {
			if m.IP == a {
				return m, nil
			}
		}
		return nil, fmt.Errorf("no machine has %s in the %s state", a, w.state)
	}
	_, name, ok := strings.Cut(from, "/")
	if !ok {
		return nil, fmt.Errorf("%q: write onprem/host, site/vm or an IP address", from)
	}
	if vm := p.spec.VM(name); vm != nil && strings.HasPrefix(from, vm.Site+"/") {
		for _, m := range w.machines {
			if m.Appliance == nil && strings.HasSuffix(m.Name, "/"+name) {
				return m, nil
			}
		}
	}
	for _, m := range w.machines {
		if m.Name == from {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%q is not an on-premises host, a protected machine or an appliance of this spec (in the %s state)", from, w.state)
}

func (tr *tracer) hop(node, route, next string) {
	tr.t.Hops = append(tr.t.Hops, Hop{Node: node, Route: route, NextHop: next})
}

func (tr *tracer) drop(format string, args ...any) {
	tr.t.Result = Dropped
	tr.t.Reason = fmt.Sprintf(format, args...)
}

func (tr *tracer) deliver(node string) {
	tr.t.Result = Delivered
	tr.t.Reason = "delivered to " + node
}

// fromOnPrem routes from an on-premises host over the circuits.
func (tr *tracer) fromOnPrem(o spec.OnPremises, node string) {
	for _, p := range o.AddressSpace {
		if p.Contains(tr.dst) {
			tr.hop(node, p.String()+" (on-premises network)", o.Name)
			tr.deliver(o.Name + " (on-premises)")
			return
		}
	}
	type learned struct {
		prefix netip.Prefix
		conn   *Connection
	}
	var ls []learned
	for _, c := range tr.w.allConnections() {
		if c.Circuit.OnPremises != o.Name || c.Gateway.VNet == nil {
			continue
		}
		for _, p := range Advertised(c.Gateway.VNet) {
			ls = append(ls, learned{p, c})
		}
	}
	sort.SliceStable(ls, func(i, j int) bool {
		a, b := ls[i], ls[j]
		if a.prefix.Bits() != b.prefix.Bits() {
			return a.prefix.Bits() > b.prefix.Bits()
		}
		pa, pb := a.conn.Site.Role == tr.w.prefer, b.conn.Site.Role == tr.w.prefer
		if pa != pb {
			return pa
		}
		return a.conn.ID() < b.conn.ID()
	})
	for _, l := range ls {
		if !l.prefix.Contains(tr.dst) {
			continue
		}
		c := l.conn
		tr.hop(node, fmt.Sprintf("%s learned over %s from %s (BGP)", l.prefix, c.Circuit.Name, c.Gateway.ID()), c.Circuit.Name)
		tr.hop(c.Circuit.Name, fmt.Sprintf("%s via connection %s (private peering at %s)", l.prefix, c.Name, c.Circuit.PeeringLocation), c.Gateway.ID())
		gs := c.Gateway.VNet.GatewaySubnet()
		if gs == nil {
			tr.drop("gateway %s has no GatewaySubnet", c.Gateway.ID())
			return
		}
		tr.route(c.Gateway.ID(), gs, true)
		return
	}
	why := fmt.Sprintf("on-premises %s has no route to %s: no connected hub advertises it over %s's circuits", o.Name, tr.dst, o.Name)
	if tr.w.state == StateTest {
		for _, m := range tr.w.machines {
			if m.IP == tr.dst && strings.HasSuffix(m.Name, "-test") {
				why = fmt.Sprintf("%s is %s in the isolated test network (%s), which is connected to no circuit", tr.dst, m.Name, m.VNet.ID())
			}
		}
	}
	if len(tr.w.notes) > 0 {
		why += " (" + strings.Join(tr.w.notes, "; ") + ")"
	}
	tr.hop(node, "no route to "+tr.dst.String()+" among the prefixes learned over "+o.Name+"'s circuits", "none")
	tr.drop("%s", why)
}

// atNIC routes a packet leaving a NIC (or a gateway) in subnet s.
func (tr *tracer) atNIC(node string, s *Subnet) {
	if s == nil {
		tr.drop("%s is in no subnet", node)
		return
	}
	tr.route(node, s, false)
}

func (tr *tracer) route(node string, s *Subnet, fromGateway bool) {
	if len(tr.t.Hops) > 32 || tr.seen[node] {
		tr.drop("routing loop at %s", node)
		return
	}
	tr.seen[node] = true
	v := s.VNet
	r, ok := pick(tr.w.effectiveRoutes(s, tr.p.spec.OnPremises), tr.dst)
	if !ok {
		tr.drop("%s has no route to %s", node, tr.dst)
		return
	}
	switch r.NextHopType {
	case "VnetLocal":
		m := tr.machineIn(v, tr.dst)
		if m == nil {
			tr.hop(node, r.String(), v.ID())
			tr.drop("no machine has %s in %s", tr.dst, v.ID())
			return
		}
		tr.hop(node, r.String(), m.Name)
		tr.arrive(m)
	case "VNetPeering":
		pe := r.Peering
		if reason := tr.crossBlocked(pe, v, fromGateway); reason != "" {
			tr.hop(node, r.String(), pe.To.ID())
			tr.drop("%s", reason)
			return
		}
		m := tr.machineIn(pe.To, tr.dst)
		if m == nil {
			tr.hop(node, r.String(), pe.To.ID())
			tr.drop("no machine has %s in %s", tr.dst, pe.To.ID())
			return
		}
		tr.hop(node, r.String(), m.Name)
		tr.arrive(m)
	case "VirtualAppliance":
		tr.toAppliance(node, r, v, fromGateway)
	case "VirtualNetworkGateway":
		g := r.Gateway
		if g == nil {
			// A user route naming the gateway: the VNet's own or its hub's.
			if gs := tr.w.gatewaysFor(v); len(gs) > 0 {
				g = gs[0]
			}
		}
		if g == nil {
			tr.hop(node, r.String(), "gateway")
			tr.drop("route %s names a gateway, but %s has none", r.Name, v.ID())
			return
		}
		tr.hop(node, r.String(), g.ID())
		tr.viaGateway(g)
	case "Internet":
		tr.hop(node, r.String(), "Internet")
		tr.drop("%s is not in any network %s reaches (peering is not transitive); the default route sends it to the Internet", tr.dst, v.ID())
	case "None":
		tr.hop(node, r.String(), "None")
		tr.drop("route %s drops traffic to %s (next hop None)", r.Name, r.Prefix)
	default:
		tr.hop(node, r.String(), r.NextHopType)
		tr.drop("next hop type %s is not followed", r.NextHopType)
	}
}

// crossBlocked says why a packet from v may not cross pe, or "".
func (tr *tracer) crossBlocked(pe *Peering, v *VNet, fromGateway bool) string {
	if !pe.Connected() {
		return fmt.Sprintf("peering %s has no reverse peering, so it is not connected", pe.ID())
	}
	forwarded := !v.Contains(tr.src)
	transit := fromGateway && pe.AllowGatewayTransit && pe.Reverse.UseRemoteGateways
	if forwarded && !transit && !pe.Reverse.AllowForwardedTraffic {
		return fmt.Sprintf("%s forwards traffic from %s into %s, but peering %s does not allow forwarded traffic", v.ID(), tr.src, pe.To.ID(), pe.Reverse.ID())
	}
	return ""
}

func (tr *tracer) machineIn(v *VNet, a netip.Addr) *machine {
	for _, m := range tr.w.machines {
		if m.VNet == v && m.IP == a {
			return m
		}
	}
	return nil
}

func (tr *tracer) arrive(m *machine) {
	if m.IP == tr.dst {
		tr.deliver(m.Name)
		return
	}
	tr.atNIC(m.Name, m.Subnet)
}

// toAppliance hands the packet, destination unchanged, to the appliance
// that a VirtualAppliance route names, in the VNet or a peered one.
func (tr *tracer) toAppliance(node string, r Route, v *VNet, fromGateway bool) {
	var ap *machine
	var via *Peering
	for _, m := range tr.w.machines {
		if m.Appliance == nil || m.IP != r.NextHopIP {
			continue
		}
		if m.VNet == v {
			ap = m
			break
		}
		for _, pe := range v.Site.Peerings {
			if pe.From == v && pe.To == m.VNet {
				ap, via = m, pe
			}
		}
	}
	if ap == nil {
		tr.hop(node, r.String(), r.NextHopIP.String())
		tr.drop("next hop %s of route %s is no appliance that %s reaches directly", r.NextHopIP, r.Name, v.ID())
		return
	}
	if via != nil {
		if !via.Connected() || !via.AllowVirtualNetworkAccess {
			tr.hop(node, r.String(), ap.Name)
			tr.drop("appliance %s is across peering %s, which does not carry traffic", ap.Name, via.ID())
			return
		}
		if reason := tr.crossBlocked(via, v, fromGateway); reason != "" {
			tr.hop(node, r.String(), ap.Name)
			tr.drop("%s", reason)
			return
		}
	}
	tr.hop(node, r.String(), ap.Name)
	if ap.IP == tr.dst {
		tr.deliver(ap.Name)
		return
	}
	tr.atNIC(ap.Name, ap.Subnet)
}

// viaGateway sends a packet out of Azure over one of g's circuits.
func (tr *tracer) viaGateway(g *Gateway) {
	conns := tr.w.activeConnections(g)
	sort.SliceStable(conns, func(i, j int) bool { return conns[i].RoutingWeight > conns[j].RoutingWeight })
	for _, c := range conns {
		for _, o := range tr.p.spec.OnPremises {
			if o.Name != c.Circuit.OnPremises {
				continue
			}
			for _, p := range o.AddressSpace {
				if p.Contains(tr.dst) {
					tr.hop(g.ID(), fmt.Sprintf("%s over connection %s (weight %d)", p, c.Name, c.RoutingWeight), c.Circuit.Name)
					tr.hop(c.Circuit.Name, p.String()+" to "+o.Name, o.Name)
					name := o.Name
					for _, h := range o.Hosts {
						if h.IPAddress.Addr == tr.dst {
							name = o.Name + "/" + h.Name
						}
					}
					tr.deliver(name)
					return
				}
			}
		}
		// Another hub on the circuit.
		for _, other := range tr.w.allConnections() {
			if other.Circuit == c.Circuit && other.Gateway != g && other.Gateway.VNet != nil {
				for _, p := range Advertised(other.Gateway.VNet) {
					if p.Contains(tr.dst) {
						tr.hop(g.ID(), fmt.Sprintf("%s over connection %s", p, c.Name), c.Circuit.Name)
						tr.hop(c.Circuit.Name, p.String()+" via connection "+other.Name, other.Gateway.ID())
						if gs := other.Gateway.VNet.GatewaySubnet(); gs != nil {
							tr.route(other.Gateway.ID(), gs, true)
							return
						}
					}
				}
			}
		}
	}
	tr.drop("gateway %s has no connected circuit that reaches %s", g.ID(), tr.dst)
}
