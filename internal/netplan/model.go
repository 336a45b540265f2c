package netplan

import (
	"net/netip"
	"sort"

	"github.com/standby-dr/standby/internal/spec"
)

// Site is one site's network in one state: what exists there.
type Site struct {
	Name   string
	Region string
	// Role is "source", "target" or "test".
	Role        string
	VNets       []*VNet
	Peerings    []*Peering
	RouteTables []*RouteTable
	Appliances  []*Appliance
	Gateways    []*Gateway
	Connections []*Connection
	Net         *spec.Network // what the site was built from
}

// VNet is a virtual network with its subnets.
type VNet struct {
	Site         *Site
	Name         string
	AddressSpace []netip.Prefix
	Subnets      []*Subnet
}

// Subnet is a VNet's subnet.
type Subnet struct {
	VNet             *VNet
	Name             string
	Prefix           netip.Prefix
	RouteTable       *RouteTable
	ServiceEndpoints []string
	NSG              string
}

// Peering is one direction of a peering; Reverse is the other, when present.
type Peering struct {
	Site     *Site
	Name     string
	From, To *VNet
	Reverse  *Peering
	spec.Peering
}

// RouteTable is a user route table.
type RouteTable struct {
	Site *Site
	spec.RouteTable
}

// Appliance is a network virtual appliance.
type Appliance struct {
	Site   *Site
	Name   string
	VNet   *VNet
	Subnet *Subnet
	IP     netip.Addr
}

// Gateway is a virtual network gateway.
type Gateway struct {
	Site *Site
	VNet *VNet
	spec.Gateway
}

// Connection links a gateway to a circuit.
type Connection struct {
	Site    *Site
	Gateway *Gateway
	Circuit *spec.Circuit
	spec.Connection
}

// ID names a resource the way findings and runbooks do:
// site/vnet, site/vnet/subnets/name, site/vnet/peerings/name.
func (v *VNet) ID() string    { return v.Site.Name + "/" + v.Name }
func (s *Subnet) ID() string  { return s.VNet.ID() + "/subnets/" + s.Name }
func (p *Peering) ID() string { return p.From.ID() + "/peerings/" + p.Name }
func (r *RouteTable) ID() string {
	return r.Site.Name + "/routeTables/" + r.Name
}
func (a *Appliance) ID() string  { return a.Site.Name + "/" + a.Name }
func (g *Gateway) ID() string    { return g.Site.Name + "/" + g.Name }
func (c *Connection) ID() string { return c.Site.Name + "/connections/" + c.Name }

// VNet returns the named VNet of the site, or nil.
func (s *Site) VNet(name string) *VNet {
	for _, v := range s.VNets {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// Subnet returns the named subnet, or nil.
func (v *VNet) Subnet(name string) *Subnet {
	for _, s := range v.Subnets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// GatewaySubnet returns the VNet's GatewaySubnet, or nil.
func (v *VNet) GatewaySubnet() *Subnet { return v.Subnet("GatewaySubnet") }

// Gateways returns the gateways in v.
func (v *VNet) Gateways() []*Gateway {
	var out []*Gateway
	for _, g := range v.Site.Gateways {
		if g.VNet == v {
			out = append(out, g)
		}
	}
	return out
}

// ERGateway returns v's ExpressRoute gateway, or nil.
func (v *VNet) ERGateway() *Gateway {
	for _, g := range v.Gateways() {
		if g.Type == "ExpressRoute" {
			return g
		}
	}
	return nil
}

// Contains reports whether a is in v's address space.
func (v *VNet) Contains(a netip.Addr) bool {
	for _, p := range v.AddressSpace {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// PeeringsFrom returns the peerings that start at v.
func (v *VNet) PeeringsFrom() []*Peering {
	// Peerings belong to the site of their From.
	var out []*Peering
	for _, p := range v.Site.Peerings {
		if p.From == v {
			out = append(out, p)
		}
	}
	return out
}

// Connected reports whether the peering from p.From to p.To and its reverse
// both exist: Azure carries traffic only over a connected peering.
func (p *Peering) Connected() bool { return p.Reverse != nil }

// Appliance returns the appliance with the address, or nil.
func (s *Site) Appliance(a netip.Addr) *Appliance {
	for _, ap := range s.Appliances {
		if ap.IP == a {
			return ap
		}
	}
	return nil
}

// RouteTable returns the named route table, or nil.
func (s *Site) RouteTable(name string) *RouteTable {
	for _, r := range s.RouteTables {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Gateway returns the named gateway, or nil.
func (s *Site) Gateway(name string) *Gateway {
	for _, g := range s.Gateways {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// buildSites turns spec networks into linked models. Cross-site peerings
// (to: site/vnet) resolve across the returned sites. Unknown references are
// skipped: the spec loader has already refused them, and generated networks
// are built by this package.
func buildSites(s *spec.Spec, nets []*spec.Network, roles map[string]string) map[string]*Site {
	sites := map[string]*Site{}
	for _, n := range nets {
		st := &Site{Name: n.Site, Role: roles[n.Site], Net: n}
		if ss := s.Site(n.Site); ss != nil {
			st.Region = ss.Region
		}
		for _, rt := range n.RouteTables {
			st.RouteTables = append(st.RouteTables, &RouteTable{Site: st, RouteTable: rt})
		}
		for _, sv := range n.VirtualNetworks {
			v := &VNet{Site: st, Name: sv.Name}
			for _, p := range sv.AddressSpace {
				v.AddressSpace = append(v.AddressSpace, p.Prefix)
			}
			for _, ss := range sv.Subnets {
				sn := &Subnet{VNet: v, Name: ss.Name, Prefix: ss.AddressPrefix.Prefix, ServiceEndpoints: ss.ServiceEndpoints, NSG: ss.NetworkSecurityGroup}
				if ss.RouteTable != "" {
					sn.RouteTable = st.RouteTable(ss.RouteTable)
				}
				v.Subnets = append(v.Subnets, sn)
			}
			st.VNets = append(st.VNets, v)
		}
		for _, a := range n.Appliances {
			ap := &Appliance{Site: st, Name: a.Name, IP: a.IPAddress.Addr}
			if v := st.VNet(a.VirtualNetwork); v != nil {
				ap.VNet = v
				ap.Subnet = v.Subnet(a.Subnet)
			}
			st.Appliances = append(st.Appliances, ap)
		}
		for _, g := range n.Gateways {
			st.Gateways = append(st.Gateways, &Gateway{Site: st, VNet: st.VNet(g.VirtualNetwork), Gateway: g})
		}
		for _, c := range n.Connections {
			st.Connections = append(st.Connections, &Connection{Site: st, Gateway: st.Gateway(c.Gateway), Circuit: s.Circuit(c.Circuit), Connection: c})
		}
		sites[n.Site] = st
	}
	for _, n := range nets {
		st := sites[n.Site]
		for _, p := range n.Peerings {
			from := st.VNet(p.From)
			to := resolveVNet(sites, st, p.To)
			if from == nil || to == nil {
				continue
			}
			st.Peerings = append(st.Peerings, &Peering{Site: st, Name: p.Name, From: from, To: to, Peering: p})
		}
	}
	// Link reverses.
	var all []*Peering
	for _, st := range sites {
		all = append(all, st.Peerings...)
	}
	for _, p := range all {
		for _, q := range all {
			if p != q && p.From == q.To && p.To == q.From {
				p.Reverse = q
			}
		}
	}
	return sites
}

func resolveVNet(sites map[string]*Site, here *Site, ref string) *VNet {
	for i := 0; i < len(ref); i++ {
		if ref[i] == '/' {
			if st := sites[ref[:i]]; st != nil {
				return st.VNet(ref[i+1:])
			}
			return nil
		}
	}
	return here.VNet(ref)
}

// sortedSites returns the sites by name, for stable output.
func sortedSites(m map[string]*Site) []*Site {
	out := make([]*Site, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// prefixesOverlap reports whether any prefix of a overlaps any of b.
func prefixesOverlap(a, b []netip.Prefix) (netip.Prefix, netip.Prefix, bool) {
	for _, x := range a {
		for _, y := range b {
			if x.Overlaps(y) {
				return x, y, true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}
