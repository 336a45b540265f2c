package netlab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/spec"
)

// Node kinds.
const (
	kindFabric    = "fab"
	kindVM        = "vm"
	kindAppliance = "nva"
	kindGateway   = "gw"
	kindCircuit   = "ckt"
	kindRouter    = "rtr"
	kindHost      = "host"
)

// nodeNS is one namespace as it should be.
type nodeNS struct {
	Name    string
	Node    string
	Kind    string
	Forward bool
	// Bridge: the namespace holds bridge br0 (fabrics, on-premises
	// routers); BridgeAddr is the router's address on it.
	Bridge     bool
	BridgeAddr netip.Addr
	Routes     []string // iproute2 batch lines
	Rules      string   // nftables ruleset of a fabric
}

// endpoint is one end of a veth link.
type endpoint struct {
	NS, If string
	Addr   netip.Prefix `json:",omitzero"`
	Master string       `json:",omitempty"`
}

// link is a veth pair, shaped when RateMbps is set.
type link struct {
	Key      string
	A, B     endpoint
	RateMbps int           `json:",omitempty"`
	Delay    time.Duration `json:",omitempty"`
}

func (l *link) hash() string {
	b, _ := json.Marshal(l)
	return string(b)
}

// layout is the whole lab as it should be.
type layout struct {
	ns    map[string]*nodeNS
	links map[string]*link
	nodes map[string][]string // address -> nodes holding it
}

func (L *layout) addAddr(a netip.Addr, node string) {
	k := a.String()
	if !slices.Contains(L.nodes[k], node) {
		L.nodes[k] = append(L.nodes[k], node)
	}
}

// nic places one interface of a node on its site's fabric.
type nic struct {
	vnet *netplan.VNet
	sn   *netplan.Subnet
	ip   netip.Addr
}

// fabricPort is a bridge port and the VNet it belongs to.
type fabricPort struct {
	If      string
	VNet    string
	Gateway bool
}

// gatewayIP is a gateway's address on the fabric: the first address Azure
// hands out in its GatewaySubnet.
func gatewayIP(g *netplan.Gateway) (netip.Addr, bool) {
	if g == nil || g.VNet == nil || g.VNet.GatewaySubnet() == nil {
		return netip.Addr{}, false
	}
	a := g.VNet.GatewaySubnet().Prefix.Masked().Addr()
	for range 4 {
		a = a.Next()
	}
	return a, true
}

// routerIP is an on-premises router's address: the first address of the
// site's first range that no host has.
func routerIP(o *spec.OnPremises) netip.Addr {
	if len(o.AddressSpace) == 0 {
		return netip.MustParseAddr("192.0.2.1")
	}
	a := o.AddressSpace[0].Prefix.Masked().Addr().Next()
	for {
		taken := false
		for _, h := range o.Hosts {
			if h.IPAddress.Addr == a {
				taken = true
			}
		}
		if !taken {
			return a
		}
		a = a.Next()
	}
}

// layout computes what the lab must look like from its resources and
// machines.
func (p *Provider) layout(st *state) *layout {
	r := p.routing(st)
	L := &layout{ns: map[string]*nodeNS{}, links: map[string]*link{}, nodes: map[string][]string{}}
	ports := map[string][]fabricPort{}
	fabric := func(site string) string { return p.nsName(kindFabric, site) }

	// addNode builds a node on its site's fabric with its NICs; the first
	// NIC's subnet gives its routes.
	addNode := func(site, kind, node string, forward bool, nics []nic, self *netplan.Gateway, selfVia func(netip.Prefix) string) *nodeNS {
		n := &nodeNS{Name: p.nsName(kind, node), Node: node, Kind: kind, Forward: forward}
		L.ns[n.Name] = n
		for i, c := range nics {
			key := "port:" + n.Name + "#" + fmt.Sprint(i)
			dev := fmt.Sprintf("eth%d", i)
			pf := ifName('p', key)
			L.links[key] = &link{Key: key,
				A: endpoint{NS: fabric(site), If: pf, Master: "br0"},
				B: endpoint{NS: n.Name, If: dev, Addr: netip.PrefixFrom(c.ip, 32)}}
			ports[site] = append(ports[site], fabricPort{If: pf, VNet: c.vnet.Name, Gateway: kind == kindGateway})
			L.addAddr(c.ip, node)
		}
		if len(nics) > 0 && nics[0].sn != nil {
			n.Routes = p.subnetRoutes(r, site, nics[0].sn, "eth0", self, selfVia)
		}
		return n
	}

	circuits := map[string][]*netplan.Connection{} // circuit -> connections with links
	for _, s := range r.Sites() {
		if len(s.VNets) == 0 {
			continue
		}
		L.ns[fabric(s.Name)] = &nodeNS{Name: fabric(s.Name), Node: "fabric of " + s.Name, Kind: kindFabric, Bridge: true}
		for _, a := range s.Appliances {
			if a.VNet == nil || a.Subnet == nil {
				continue
			}
			addNode(s.Name, kindAppliance, a.ID(), true, []nic{{a.VNet, a.Subnet, a.IP}}, nil, nil)
		}
		for _, g := range s.Gateways {
			ip, ok := gatewayIP(g)
			if !ok {
				continue
			}
			gns := p.nsName(kindGateway, g.ID())
			via := map[netip.Prefix]string{}
			var first string
			conns := r.ActiveConnections(g)
			sort.SliceStable(conns, func(i, j int) bool { return conns[i].RoutingWeight > conns[j].RoutingWeight })
			for _, c := range s.Connections {
				if c.Gateway != g || c.Circuit == nil {
					continue
				}
				key := "conn:" + c.ID()
				a, b := slotAddrs(st.slot(key))
				L.links[key] = &link{Key: key,
					A: endpoint{NS: gns, If: ifName('k', key), Addr: a},
					B: endpoint{NS: p.nsName(kindCircuit, c.Circuit.Name), If: ifName('g', key), Addr: b}}
				circuits[c.Circuit.Name] = append(circuits[c.Circuit.Name], c)
				L.addAddr(a.Addr(), g.ID())
			}
			for _, c := range conns {
				l := L.links["conn:"+c.ID()]
				hop := "via " + l.B.Addr.Addr().String() + " dev " + l.A.If
				if first == "" {
					first = hop
				}
				var learned []netip.Prefix
				if o := p.onPremises(c.Circuit.OnPremises); o != nil {
					for _, pf := range o.AddressSpace {
						learned = append(learned, pf.Prefix)
					}
				}
				for _, other := range r.Connections() {
					if other.Circuit.Name == c.Circuit.Name && other.Gateway != g && other.Gateway.VNet != nil {
						learned = append(learned, netplan.Advertised(other.Gateway.VNet)...)
					}
				}
				for _, pf := range learned {
					if _, ok := via[pf]; !ok {
						via[pf] = hop
					}
				}
			}
			selfVia := func(pf netip.Prefix) string {
				if h, ok := via[pf]; ok {
					return h
				}
				return first
			}
			addNode(s.Name, kindGateway, g.ID(), true, []nic{{g.VNet, g.VNet.GatewaySubnet(), ip}}, g, selfVia)
		}
	}

	// Machines.
	for _, m := range st.Machines {
		s := r.Site(m.Site)
		if s == nil {
			continue
		}
		var d vmDef
		json.Unmarshal(m.Def, &d)
		var nics []nic
		for _, n := range d.NICs {
			v := s.VNet(n.VirtualNetwork)
			if v == nil || v.Subnet(n.Subnet) == nil || !n.IPAddress.IsValid() {
				continue
			}
			nics = append(nics, nic{v, v.Subnet(n.Subnet), n.IPAddress.Addr})
		}
		addNode(m.Site, kindVM, m.Site+"/"+m.Name, false, nics, nil, nil)
	}

	// Fabric rules, once every port is known.
	for _, s := range r.Sites() {
		if f := L.ns[fabric(s.Name)]; f != nil {
			f.Rules = fabricRules(s, ports[s.Name])
		}
	}

	// Circuits, on-premises routers and hosts.
	routers := map[string]bool{}
	for _, res := range st.Resources {
		if res.Ref.Kind == provider.KindHost {
			routers[res.Ref.Site] = true
		}
	}
	for name := range circuits {
		if c := p.spec.Circuit(name); c != nil && p.onPremises(c.OnPremises) != nil {
			routers[c.OnPremises] = true
		}
	}
	routerNS := func(o string) string { return p.nsName(kindRouter, o) }
	for o := range routers {
		op := p.onPremises(o)
		ip := routerIP(op)
		n := &nodeNS{Name: routerNS(o), Node: o, Kind: kindRouter, Forward: true, Bridge: true, BridgeAddr: ip}
		L.ns[n.Name] = n
		L.addAddr(ip, o)
		for _, pf := range op.AddressSpace {
			n.Routes = append(n.Routes, fmt.Sprintf("route add %s dev br0 proto static", pf))
		}
	}
	type learned struct {
		pf        netip.Prefix
		conn      *netplan.Connection
		hop       string
		preferred bool
	}
	heard := map[string][]learned{} // on-premises site -> routes learned
	for name, conns := range circuits {
		c := p.spec.Circuit(name)
		cns := p.nsName(kindCircuit, name)
		n := &nodeNS{Name: cns, Node: name, Kind: kindCircuit, Forward: true}
		L.ns[cns] = n
		for _, cn := range conns {
			L.addAddr(L.links["conn:"+cn.ID()].B.Addr.Addr(), name)
		}
		op := p.onPremises(c.OnPremises)
		if op == nil {
			continue
		}
		key := "edge:" + name
		a, b := slotAddrs(st.slot(key))
		L.links[key] = &link{Key: key,
			A:        endpoint{NS: cns, If: ifName('o', key), Addr: a},
			B:        endpoint{NS: routerNS(op.Name), If: ifName('c', key), Addr: b},
			RateMbps: c.BandwidthMbps, Delay: p.opts.CircuitDelay}
		L.addAddr(a.Addr(), name)
		L.addAddr(b.Addr(), op.Name)
		for _, pf := range op.AddressSpace {
			n.Routes = append(n.Routes, fmt.Sprintf("route add %s via %s dev %s proto static", pf, b.Addr(), ifName('o', key)))
		}
		// What each connection's hub advertises; identical prefixes of two
		// connections (only with Force) become multipath.
		hops := map[netip.Prefix][]string{}
		var order []netip.Prefix
		for _, cn := range r.Connections() {
			if cn.Circuit.Name != name || cn.Gateway.VNet == nil {
				continue
			}
			l := L.links["conn:"+cn.ID()]
			if l == nil {
				continue
			}
			for _, pf := range netplan.Advertised(cn.Gateway.VNet) {
				if _, ok := hops[pf]; !ok {
					order = append(order, pf)
				}
				hops[pf] = append(hops[pf], fmt.Sprintf("via %s dev %s", l.A.Addr.Addr(), l.B.If))
				heard[op.Name] = append(heard[op.Name], learned{pf, cn, fmt.Sprintf("via %s dev %s", a.Addr(), ifName('c', key)), preferred(st, cn)})
			}
		}
		for _, pf := range order {
			hs := hops[pf]
			if len(hs) == 1 {
				n.Routes = append(n.Routes, fmt.Sprintf("route add %s %s proto static", pf, hs[0]))
				continue
			}
			line := fmt.Sprintf("route add %s proto static", pf)
			for _, h := range hs {
				line += " nexthop " + h
			}
			n.Routes = append(n.Routes, line)
		}
	}
	// The on-premises router prefers a preferred connection on equal
	// prefixes (lower metric), then the connection's name.
	for o, ls := range heard {
		n := L.ns[routerNS(o)]
		sort.SliceStable(ls, func(i, j int) bool {
			if ls[i].preferred != ls[j].preferred {
				return ls[i].preferred
			}
			return ls[i].conn.ID() < ls[j].conn.ID()
		})
		metric := map[netip.Prefix]int{}
		seen := map[string]bool{}
		for _, l := range ls {
			k := l.pf.String() + " " + l.hop
			if seen[k] {
				continue
			}
			seen[k] = true
			metric[l.pf]++
			n.Routes = append(n.Routes, fmt.Sprintf("route add %s %s metric %d proto static", l.pf, l.hop, 10*metric[l.pf]))
		}
	}
	for _, res := range st.Resources {
		if res.Ref.Kind != provider.KindHost {
			continue
		}
		var h spec.Host
		json.Unmarshal(res.Def, &h)
		op := p.onPremises(res.Ref.Site)
		node := res.Ref.Site + "/" + h.Name
		n := &nodeNS{Name: p.nsName(kindHost, node), Node: node, Kind: kindHost}
		L.ns[n.Name] = n
		key := "host:" + node
		L.links[key] = &link{Key: key,
			A: endpoint{NS: routerNS(res.Ref.Site), If: ifName('h', key), Master: "br0"},
			B: endpoint{NS: n.Name, If: "eth0", Addr: netip.PrefixFrom(h.IPAddress.Addr, 32)}}
		L.addAddr(h.IPAddress.Addr, node)
		for _, pf := range op.AddressSpace {
			n.Routes = append(n.Routes, fmt.Sprintf("route add %s dev eth0 proto static", pf))
		}
		n.Routes = append(n.Routes, fmt.Sprintf("route add default via %s dev eth0 onlink proto static", routerIP(op)))
	}
	return L
}

// subnetRoutes turns a subnet's effective routes, as netplan computes
// them, into routes with on-link next hops on dev: the best route of each
// prefix, as Azure picks it.
func (p *Provider) subnetRoutes(r *netplan.Routing, site string, sn *netplan.Subnet, dev string, self *netplan.Gateway, selfVia func(netip.Prefix) string) []string {
	best := map[netip.Prefix]netplan.Route{}
	var order []netip.Prefix
	for _, rt := range r.SubnetRoutes(site, sn.VNet.Name, sn.Name) {
		cur, ok := best[rt.Prefix]
		if !ok {
			order = append(order, rt.Prefix)
		}
		if !ok || rt.Kind > cur.Kind {
			best[rt.Prefix] = rt
		}
	}
	var out []string
	for _, pf := range order {
		rt := best[pf]
		var line string
		switch rt.NextHopType {
		case spec.NextHopVnetLocal, "VNetPeering":
			line = fmt.Sprintf("route add %s dev %s", pf, dev)
		case spec.NextHopVirtualAppliance:
			if rt.NextHopIP.IsValid() {
				line = fmt.Sprintf("route add %s via %s dev %s onlink", pf, rt.NextHopIP, dev)
			} else {
				line = fmt.Sprintf("route add blackhole %s", pf)
			}
		case spec.NextHopVirtualNetworkGateway:
			g := rt.Gateway
			if g == nil {
				if gs := r.GatewaysFor(sn.VNet); len(gs) > 0 {
					g = gs[0]
				}
			}
			ip, ok := gatewayIP(g)
			switch {
			case g != nil && g == self && selfVia != nil && selfVia(pf) != "":
				line = fmt.Sprintf("route add %s %s", pf, selfVia(pf))
			case ok && g != self:
				line = fmt.Sprintf("route add %s via %s dev %s onlink", pf, ip, dev)
			default:
				line = fmt.Sprintf("route add unreachable %s", pf)
			}
		case spec.NextHopNone:
			line = fmt.Sprintf("route add blackhole %s", pf)
		default: // Internet, and anything else: no way out of the lab
			line = fmt.Sprintf("route add unreachable %s", pf)
		}
		out = append(out, line+" proto static")
	}
	return out
}

// fabricRules is the nftables ruleset of a site's fabric: frames pass
// between ports of one VNet, and from VNet A to VNet B when A's peering to
// B is connected and allows virtual network access; forwarded traffic (a
// source outside A's space) only when B's peering to A allows forwarded
// traffic, or as gateway transit from A's gateway into a spoke that uses
// it. ARP passes wherever A may talk to B.
func fabricRules(s *netplan.Site, ports []fabricPort) string {
	byVNet := map[string][]string{}
	gws := map[string][]string{}
	for _, pt := range ports {
		byVNet[pt.VNet] = append(byVNet[pt.VNet], pt.If)
		if pt.Gateway {
			gws[pt.VNet] = append(gws[pt.VNet], pt.If)
		}
	}
	set := func(ifs []string) string {
		q := make([]string, len(ifs))
		for i, f := range ifs {
			q[i] = `"` + f + `"`
		}
		return "{ " + strings.Join(q, ", ") + " }"
	}
	var b strings.Builder
	b.WriteString("table bridge standby\ndelete table bridge standby\ntable bridge standby {\n\tchain fabric {\n\t\ttype filter hook forward priority 0; policy drop;\n")
	vnets := make([]string, 0, len(byVNet))
	for v := range byVNet {
		vnets = append(vnets, v)
	}
	sort.Strings(vnets)
	for _, v := range vnets {
		fmt.Fprintf(&b, "\t\tiifname %s oifname %s accept\n", set(byVNet[v]), set(byVNet[v]))
	}
	for _, pe := range s.Peerings {
		a, bb := byVNet[pe.From.Name], byVNet[pe.To.Name]
		if pe.From.Site != s || pe.To.Site != s || len(a) == 0 || len(bb) == 0 || !pe.Connected() || !pe.AllowVirtualNetworkAccess {
			continue
		}
		fmt.Fprintf(&b, "\t\t# peering %s\n", pe.Name)
		fmt.Fprintf(&b, "\t\tiifname %s oifname %s ether type arp accept\n", set(a), set(bb))
		var space []string
		for _, pf := range pe.From.AddressSpace {
			space = append(space, pf.String())
		}
		if len(space) > 0 {
			fmt.Fprintf(&b, "\t\tiifname %s oifname %s ip saddr { %s } accept\n", set(a), set(bb), strings.Join(space, ", "))
		}
		switch {
		case pe.Reverse.AllowForwardedTraffic:
			fmt.Fprintf(&b, "\t\tiifname %s oifname %s ether type ip accept\n", set(a), set(bb))
		case pe.AllowGatewayTransit && pe.Reverse.UseRemoteGateways && len(gws[pe.From.Name]) > 0:
			fmt.Fprintf(&b, "\t\tiifname %s oifname %s ether type ip accept\n", set(gws[pe.From.Name]), set(bb))
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// preferred tells whether on-premises prefers a connection on equal
// prefixes: one of the site Prefer named, or else of a source site.
func preferred(st *state, cn *netplan.Connection) bool {
	if st.Preferred != "" {
		return cn.Site.Name == st.Preferred
	}
	return cn.Site.Role != "target"
}
