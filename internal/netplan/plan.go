package netplan

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/standby-dr/standby/internal/spec"
)

// Topology is the derived failover topology.
type Topology struct {
	// Kind is single-circuit, two-circuits-one-location or
	// two-circuits-two-locations.
	Kind           string   `json:"kind"`
	Addressing     string   `json:"addressing"`
	SourceSites    []string `json:"sourceSites"`
	TargetSite     string   `json:"targetSite"`
	SourceHub      string   `json:"sourceHub,omitempty"`
	TargetHub      string   `json:"targetHub,omitempty"`
	SourceCircuits []string `json:"sourceCircuits"`
	TargetCircuits []string `json:"targetCircuits"`
	// CrossGeography: a target circuit's peering location is outside the
	// target region's geopolitical area.
	CrossGeography bool `json:"crossGeography"`
	// Provisioned: target networks are built before failover.
	Provisioned bool `json:"provisionBeforeFailover"`
}

// Topology kinds.
const (
	SingleCircuit           = "single-circuit"
	TwoCircuitsOneLocation  = "two-circuits-one-location"
	TwoCircuitsTwoLocations = "two-circuits-two-locations"
)

// MapEntry maps one source resource to its target, both ways: failover
// uses source to target, failback target to source.
type MapEntry struct {
	Kind         string `json:"kind"`
	Source       string `json:"source"`
	Target       string `json:"target"`
	SourcePrefix string `json:"sourcePrefix,omitempty"`
	TargetPrefix string `json:"targetPrefix,omitempty"`
	// Status is generated (standby creates it) or existing (pre-provisioned).
	Status string `json:"status"`
}

// Placement is where one NIC of a protected machine lives in a state.
type Placement struct {
	Site   string     `json:"site"`
	VNet   string     `json:"virtualNetwork"`
	Subnet string     `json:"subnet"`
	IP     netip.Addr `json:"ipAddress"`
}

// MachineMap is a protected machine's NIC in the source, target and test
// networks.
type MachineMap struct {
	VM     string    `json:"virtualMachine"`
	NIC    int       `json:"nic"`
	Source Placement `json:"source"`
	Target Placement `json:"target"`
	Test   Placement `json:"test"`
}

// Plan is everything derived from a spec: topology, target and test
// networks, the map, the runbook. It is pure data.
type Plan struct {
	Topology    Topology      `json:"topology"`
	Mapping     []MapEntry    `json:"mapping"`
	Target      *spec.Network `json:"target"`
	TestNetwork *spec.Network `json:"testNetwork"`
	Machines    []MachineMap  `json:"machines"`
	Runbook     []Action      `json:"runbook"`
	Estimate    Estimate      `json:"estimate"`

	// Problems are what generation could not do (a prefix without a
	// translation, an exhausted test pool); Check reports them as findings.
	Problems []Finding `json:"problems,omitempty"`

	spec       *spec.Spec
	geo        *Geography
	source     map[string]*Site // source sites as they are
	srcNets    []*spec.Network
	generated  map[string]bool  // target resource IDs standby creates
	vnetMap    map[*VNet]string // source VNet -> target VNet name
	testMap    map[*VNet]string // source VNet -> test VNet name
	tr, testTr *translator
	hub        *VNet // source hub
	srcConns   []*Connection
}

// Spec returns the spec the plan was derived from.
func (p *Plan) Spec() *spec.Spec { return p.spec }

// Derive builds the plan of a loaded spec.
func Derive(s *spec.Spec) *Plan {
	p := &Plan{spec: s, geo: LoadGeography(), generated: map[string]bool{}, vnetMap: map[*VNet]string{}, testMap: map[*VNet]string{}}
	nm := s.Recovery.NetworkMapping
	target := s.Recovery.TargetSite

	// Source sites: where protected machines run; else every other site.
	srcSet := map[string]bool{}
	for _, vm := range s.Protection.VirtualMachines {
		srcSet[vm.Site] = true
	}
	if len(srcSet) == 0 {
		for _, n := range s.Networks {
			if n.Site != target {
				srcSet[n.Site] = true
			}
		}
	}
	roles := map[string]string{}
	for i := range s.Networks {
		if srcSet[s.Networks[i].Site] && s.Networks[i].Site != target {
			p.srcNets = append(p.srcNets, &s.Networks[i])
			roles[s.Networks[i].Site] = "source"
		}
	}
	p.source = buildSites(s, p.srcNets, roles)
	for _, st := range sortedSites(p.source) {
		p.Topology.SourceSites = append(p.Topology.SourceSites, st.Name)
		p.srcConns = append(p.srcConns, st.Connections...)
	}
	p.Topology.TargetSite = target
	p.Topology.Addressing = nm.Addressing
	p.Topology.Provisioned = nm.Connectivity.Provision()

	p.tr = &translator{same: nm.Addressing != spec.AddressingTranslate}
	for _, t := range nm.AddressTranslation {
		p.tr.pairs = append(p.tr.pairs, [2]netip.Prefix{t.From.Prefix, t.To.Prefix})
	}
	p.hub = p.findHub()
	if p.hub != nil {
		p.Topology.SourceHub = p.hub.ID()
	}

	// The target network starts as what is pre-provisioned there.
	p.Target = &spec.Network{Site: target}
	if n := s.Network(target); n != nil {
		cp := cloneNetwork(n)
		p.Target = &cp
	}
	p.generateTarget()
	p.generateTest()
	p.placeMachines()
	p.deriveTopology()
	p.Runbook = p.buildRunbook()
	p.Estimate = estimate(p.Runbook)
	sort.SliceStable(p.Mapping, func(i, j int) bool {
		if p.Mapping[i].Kind != p.Mapping[j].Kind {
			return kindOrder[p.Mapping[i].Kind] < kindOrder[p.Mapping[j].Kind]
		}
		return p.Mapping[i].Source < p.Mapping[j].Source
	})
	return p
}

var kindOrder = map[string]int{"virtualNetwork": 0, "subnet": 1, "routeTable": 2, "appliance": 3, "gateway": 4, "connection": 5, "peering": 6, "networkInterface": 7}

// findHub returns the source hub: the one named in connectivity, else the
// VNet whose ExpressRoute gateway has connections, else any with a gateway.
func (p *Plan) findHub() *VNet {
	name := p.spec.Recovery.NetworkMapping.Connectivity.Hub
	var withGw *VNet
	for _, st := range sortedSites(p.source) {
		for _, v := range st.VNets {
			if name != "" {
				if v.Name == name {
					return v
				}
				continue
			}
			if g := v.ERGateway(); g != nil {
				for _, c := range st.Connections {
					if c.Gateway == g {
						return v
					}
				}
				if withGw == nil {
					withGw = v
				}
			}
		}
	}
	return withGw
}

func (p *Plan) problem(rule, sev, scope, resource, hint, format string, args ...any) {
	p.Problems = append(p.Problems, Finding{Rule: rule, Severity: sev, Scope: scope, Resource: resource, Message: fmt.Sprintf(format, args...), Hint: hint})
}

func cloneNetwork(n *spec.Network) spec.Network {
	c := spec.Network{Site: n.Site}
	for _, v := range n.VirtualNetworks {
		v.AddressSpace = slices.Clone(v.AddressSpace)
		v.Subnets = slices.Clone(v.Subnets)
		c.VirtualNetworks = append(c.VirtualNetworks, v)
	}
	c.Peerings = slices.Clone(n.Peerings)
	for _, rt := range n.RouteTables {
		rt.Routes = slices.Clone(rt.Routes)
		c.RouteTables = append(c.RouteTables, rt)
	}
	c.Appliances = slices.Clone(n.Appliances)
	c.Gateways = slices.Clone(n.Gateways)
	c.Connections = slices.Clone(n.Connections)
	return c
}

func findVNet(n *spec.Network, name string) *spec.VirtualNetwork {
	for i := range n.VirtualNetworks {
		if n.VirtualNetworks[i].Name == name {
			return &n.VirtualNetworks[i]
		}
	}
	return nil
}

func hasRouteTable(n *spec.Network, name string) bool {
	return slices.ContainsFunc(n.RouteTables, func(r spec.RouteTable) bool { return r.Name == name })
}

func hasAppliance(n *spec.Network, name string) bool {
	return slices.ContainsFunc(n.Appliances, func(a spec.Appliance) bool { return a.Name == name })
}

// mirror describes how one copy of the source networks is named and
// addressed: the target (suffix, mapping translation) or the test network.
type mirror struct {
	site, suffix, scope string
	tr                  *translator
	net                 *spec.Network
	names               map[*VNet]string
	record              bool // record map entries and generated IDs
	withGateway         bool
}

// generateTarget mirrors every source VNet at the target site, reusing
// what is pre-provisioned there.
func (p *Plan) generateTarget() {
	m := &mirror{site: p.Topology.TargetSite, suffix: p.spec.Recovery.NetworkMapping.Suffix(), scope: ScopeTarget, tr: p.tr, net: p.Target, names: p.vnetMap, record: true, withGateway: true}
	p.mirror(m)
	if p.hub != nil {
		p.Topology.TargetHub = p.Topology.TargetSite + "/" + p.vnetMap[p.hub]
	}
	p.connectTarget()
}

// generateTest mirrors every source VNet into the isolated test network,
// carved from the test pool.
func (p *Plan) generateTest() {
	tn := p.spec.Recovery.NetworkMapping.TestNetwork
	p.TestNetwork = &spec.Network{Site: p.Topology.TargetSite}
	p.testTr = &translator{same: tn.Addressing == spec.AddressingSame}
	if !p.testTr.same {
		c := newCarver(tn.AddressPool.Prefix)
		type blk struct {
			vnet   *VNet
			prefix netip.Prefix
		}
		var blocks []blk
		for _, st := range sortedSites(p.source) {
			for _, v := range st.VNets {
				for _, pr := range v.AddressSpace {
					blocks = append(blocks, blk{v, pr})
				}
			}
		}
		// Largest first keeps the carve tight; names break ties so the
		// result does not depend on list order.
		sort.SliceStable(blocks, func(i, j int) bool {
			if blocks[i].prefix.Bits() != blocks[j].prefix.Bits() {
				return blocks[i].prefix.Bits() < blocks[j].prefix.Bits()
			}
			return blocks[i].vnet.ID() < blocks[j].vnet.ID()
		})
		for _, b := range blocks {
			to, err := c.take(b.prefix.Bits())
			if err != nil {
				p.problem("AS-04", SevError, ScopeTest, b.vnet.ID(), "set recovery.networkMapping.testNetwork.addressPool to a prefix large enough for every source address space", "cannot carve a test network for %s (%s): %v", b.vnet.ID(), b.prefix, err)
				continue
			}
			p.testTr.pairs = append(p.testTr.pairs, [2]netip.Prefix{b.prefix, to})
		}
	}
	m := &mirror{site: p.Topology.TargetSite, suffix: "-test", scope: ScopeTest, tr: p.testTr, net: p.TestNetwork, names: p.testMap, withGateway: tn.ConnectToCircuit}
	p.mirror(m)
	// connectToCircuit: the drill network reaches on-premises over the
	// target circuits, through its own gateway.
	if tn.ConnectToCircuit && p.hub != nil {
		if gw := erGatewayIn(p.TestNetwork, p.testMap[p.hub]); gw != "" {
			for _, ci := range p.targetCircuits() {
				p.TestNetwork.Connections = append(p.TestNetwork.Connections, spec.Connection{Name: gw + "-" + ci, Gateway: gw, Circuit: ci})
			}
		}
	}
}

func (p *Plan) mirror(m *mirror) {
	for _, st := range sortedSites(p.source) {
		for _, v := range byName(st.VNets, func(v *VNet) string { return v.Name }) {
			name := v.Name + m.suffix
			if m.record {
				if findVNet(m.net, name) == nil && findVNet(m.net, v.Name) != nil {
					name = v.Name
				}
			}
			m.names[v] = name
			status := "existing"
			if findVNet(m.net, name) == nil {
				status = "generated"
				nv := spec.VirtualNetwork{Name: name}
				for _, pr := range v.AddressSpace {
					tp, err := m.tr.prefix(pr)
					if err != nil {
						p.problem("AS-01", SevError, m.scope, v.ID(), "add an addressTranslation pair whose from covers "+pr.String(), "virtual network %s cannot be mapped: %v", v.ID(), err)
						continue
					}
					nv.AddressSpace = append(nv.AddressSpace, spec.Prefix{Prefix: tp})
				}
				for _, sn := range v.Subnets {
					if sn.Name == "GatewaySubnet" && !m.withGateway {
						continue
					}
					tp, err := m.tr.prefix(sn.Prefix)
					if err != nil {
						p.problem("AS-01", SevError, m.scope, sn.ID(), "add an addressTranslation pair whose from covers "+sn.Prefix.String(), "subnet %s cannot be mapped: %v", sn.ID(), err)
						continue
					}
					ns := spec.Subnet{Name: sn.Name, AddressPrefix: spec.Prefix{Prefix: tp}, ServiceEndpoints: slices.Clone(sn.ServiceEndpoints), NetworkSecurityGroup: sn.NSG}
					if sn.RouteTable != nil {
						ns.RouteTable = sn.RouteTable.Name + m.suffix
					}
					nv.Subnets = append(nv.Subnets, ns)
					if m.record {
						p.generated[m.site+"/"+name+"/subnets/"+sn.Name] = true
					}
				}
				m.net.VirtualNetworks = append(m.net.VirtualNetworks, nv)
				if m.record {
					p.generated[m.site+"/"+name] = true
				}
			}
			if m.record {
				e := MapEntry{Kind: "virtualNetwork", Source: v.ID(), Target: m.site + "/" + name, SourcePrefix: prefixesString(v.AddressSpace), Status: status}
				if tv := findVNet(m.net, name); tv != nil {
					e.TargetPrefix = specPrefixesString(tv.AddressSpace)
					for _, sn := range v.Subnets {
						se := MapEntry{Kind: "subnet", Source: sn.ID(), Target: m.site + "/" + name + "/subnets/" + sn.Name, SourcePrefix: sn.Prefix.String(), Status: status}
						for _, ts := range tv.Subnets {
							if ts.Name == sn.Name {
								se.TargetPrefix = ts.AddressPrefix.String()
							}
						}
						p.Mapping = append(p.Mapping, se)
					}
				}
				p.Mapping = append(p.Mapping, e)
			}
		}
		// Route tables used by the mirrored subnets.
		for _, rt := range byName(st.RouteTables, func(r *RouteTable) string { return r.Name }) {
			name := rt.Name + m.suffix
			if hasRouteTable(m.net, name) {
				if m.record {
					p.Mapping = append(p.Mapping, MapEntry{Kind: "routeTable", Source: rt.ID(), Target: m.site + "/routeTables/" + name, Status: "existing"})
				}
				continue
			}
			nt := spec.RouteTable{Name: name, DisableBgpRoutePropagation: rt.DisableBgpRoutePropagation}
			for _, r := range rt.Routes {
				nr := r
				if m.tr.covers(r.AddressPrefix.Prefix) {
					tp, _ := m.tr.prefix(r.AddressPrefix.Prefix)
					nr.AddressPrefix = spec.Prefix{Prefix: tp}
				}
				if r.NextHopIPAddress.IsValid() {
					ta, err := m.tr.addr(r.NextHopIPAddress.Addr)
					if err != nil {
						p.problem("RT-01", SevError, m.scope, rt.ID()+"/routes/"+r.Name, "add an addressTranslation pair that covers the appliance address", "next hop %s of route %s cannot be translated: %v", r.NextHopIPAddress, r.Name, err)
					} else {
						nr.NextHopIPAddress = spec.Addr{Addr: ta}
					}
				}
				nt.Routes = append(nt.Routes, nr)
			}
			m.net.RouteTables = append(m.net.RouteTables, nt)
			if m.record {
				p.generated[m.site+"/routeTables/"+name] = true
				p.Mapping = append(p.Mapping, MapEntry{Kind: "routeTable", Source: rt.ID(), Target: m.site + "/routeTables/" + name, Status: "generated"})
			}
		}
		for _, a := range byName(st.Appliances, func(a *Appliance) string { return a.Name }) {
			name := a.Name + m.suffix
			status := "existing"
			ip := a.IP
			if !hasAppliance(m.net, name) && a.VNet != nil && a.Subnet != nil {
				status = "generated"
				ta, err := m.tr.addr(a.IP)
				if err != nil {
					p.problem("RT-01", SevError, m.scope, a.ID(), "add an addressTranslation pair that covers the appliance address", "appliance %s cannot be mapped: %v", a.ID(), err)
					continue
				}
				ip = ta
				m.net.Appliances = append(m.net.Appliances, spec.Appliance{Name: name, VirtualNetwork: m.names[a.VNet], Subnet: a.Subnet.Name, IPAddress: spec.Addr{Addr: ta}})
				if m.record {
					p.generated[m.site+"/"+name] = true
				}
			}
			if m.record {
				p.Mapping = append(p.Mapping, MapEntry{Kind: "appliance", Source: a.ID(), Target: m.site + "/" + name, SourcePrefix: a.IP.String(), TargetPrefix: ip.String(), Status: status})
			}
		}
		if m.withGateway {
			for _, g := range byName(st.Gateways, func(g *Gateway) string { return g.Name }) {
				if g.VNet == nil || g.VNet != p.hub || g.Type != "ExpressRoute" {
					continue
				}
				tv := m.names[g.VNet]
				if existing := erGatewayIn(m.net, tv); existing != "" {
					if m.record {
						p.Mapping = append(p.Mapping, MapEntry{Kind: "gateway", Source: g.ID(), Target: m.site + "/" + existing, Status: "existing"})
					}
					continue
				}
				sku := p.spec.Recovery.NetworkMapping.Connectivity.GatewaySku
				if sku == "" {
					sku = g.Sku
				}
				no := false
				ng := spec.Gateway{Name: g.Name + m.suffix, VirtualNetwork: tv, Type: g.Type, Sku: sku, PublicIPSku: "Standard", Provisioned: &no}
				m.net.Gateways = append(m.net.Gateways, ng)
				if m.record {
					p.generated[m.site+"/"+ng.Name] = true
					p.Mapping = append(p.Mapping, MapEntry{Kind: "gateway", Source: g.ID(), Target: m.site + "/" + ng.Name, Status: "generated"})
				}
			}
		}
		for _, pe := range byName(st.Peerings, func(p *Peering) string { return p.Name }) {
			if pe.To.Site != st {
				continue // cross-site peerings are not mirrored
			}
			from, to := m.names[pe.From], m.names[pe.To]
			if i := slices.IndexFunc(m.net.Peerings, func(q spec.Peering) bool { return q.From == from && q.To == to }); i >= 0 {
				if m.record {
					p.Mapping = append(p.Mapping, MapEntry{Kind: "peering", Source: pe.ID(), Target: m.site + "/" + from + "/peerings/" + m.net.Peerings[i].Name, Status: "existing"})
				}
				continue
			}
			np := pe.Peering
			np.From, np.To = from, to
			if !m.withGateway {
				// No gateway in an isolated network: transit flags would
				// point at nothing.
				np.AllowGatewayTransit, np.UseRemoteGateways = false, false
			}
			m.net.Peerings = append(m.net.Peerings, np)
			if m.record {
				id := m.site + "/" + from + "/peerings/" + np.Name
				p.generated[id] = true
				p.Mapping = append(p.Mapping, MapEntry{Kind: "peering", Source: pe.ID(), Target: id, Status: "generated"})
			}
		}
	}
}

func erGatewayIn(n *spec.Network, vnet string) string {
	for _, g := range n.Gateways {
		if g.VirtualNetwork == vnet && g.Type == "ExpressRoute" {
			return g.Name
		}
	}
	return ""
}

// TargetCircuits returns the circuits the target hub connects to: the
// connectivity list, else the source hub's own circuits (single circuit).
func (p *Plan) targetCircuits() []string {
	if cs := p.spec.Recovery.NetworkMapping.Connectivity.Circuits; len(cs) > 0 {
		return slices.Clone(cs)
	}
	var out []string
	for _, c := range p.srcConns {
		if c.Gateway != nil && c.Gateway.VNet == p.hub && !slices.Contains(out, c.Circuit.Name) {
			out = append(out, c.Circuit.Name)
		}
	}
	return out
}

// connectTarget adds a connection from the target gateway to each target
// circuit, unless one exists.
func (p *Plan) connectTarget() {
	if p.hub == nil {
		return
	}
	gw := erGatewayIn(p.Target, p.vnetMap[p.hub])
	if gw == "" {
		return
	}
	weight := 0
	for _, c := range p.srcConns {
		if c.Gateway != nil && c.Gateway.VNet == p.hub {
			weight = c.RoutingWeight
		}
	}
	for _, ci := range p.targetCircuits() {
		if slices.ContainsFunc(p.Target.Connections, func(c spec.Connection) bool { return c.Gateway == gw && c.Circuit == ci }) {
			continue
		}
		c := spec.Connection{Name: gw + "-" + ci, Gateway: gw, Circuit: ci, RoutingWeight: weight}
		p.Target.Connections = append(p.Target.Connections, c)
		id := p.Topology.TargetSite + "/connections/" + c.Name
		p.generated[id] = true
		p.Mapping = append(p.Mapping, MapEntry{Kind: "connection", Source: p.hub.ID(), Target: id, Status: "generated"})
	}
}

// deriveTopology classifies the failover.
func (p *Plan) deriveTopology() {
	for _, c := range p.srcConns {
		if c.Circuit != nil && !slices.Contains(p.Topology.SourceCircuits, c.Circuit.Name) {
			p.Topology.SourceCircuits = append(p.Topology.SourceCircuits, c.Circuit.Name)
		}
	}
	sort.Strings(p.Topology.SourceCircuits)
	p.Topology.TargetCircuits = p.targetCircuits()
	sort.Strings(p.Topology.TargetCircuits)
	single := false
	for _, c := range p.Topology.TargetCircuits {
		if slices.Contains(p.Topology.SourceCircuits, c) {
			single = true
		}
	}
	switch {
	case single:
		p.Topology.Kind = SingleCircuit
	default:
		p.Topology.Kind = TwoCircuitsTwoLocations
		for _, t := range p.Topology.TargetCircuits {
			for _, s := range p.Topology.SourceCircuits {
				tc, sc := p.spec.Circuit(t), p.spec.Circuit(s)
				if tc != nil && sc != nil && SamePlace(tc.PeeringLocation, sc.PeeringLocation) {
					p.Topology.Kind = TwoCircuitsOneLocation
				}
			}
		}
	}
	if ts := p.spec.Site(p.Topology.TargetSite); ts != nil {
		area := p.geo.RegionArea(ts.Region)
		for _, name := range p.Topology.TargetCircuits {
			if c := p.spec.Circuit(name); c != nil && area != "" && p.geo.LocationArea(c.PeeringLocation) != area {
				p.Topology.CrossGeography = true
			}
		}
	}
}

// SameIPs reports whether target and source share addresses, so both
// cannot be connected to one circuit at once.
func (p *Plan) SameIPs() bool { return p.tr.same }

// placeMachines gives every NIC its target and test address: the same
// (translated) one if free, else the next free one (target) or one from
// the end of the subnet (test).
func (p *Plan) placeMachines() {
	taken := map[string]map[netip.Addr]bool{}
	take := func(net *spec.Network, vnet, subnet string, want netip.Addr, fromEnd bool) Placement {
		pl := Placement{Site: net.Site, VNet: vnet, Subnet: subnet}
		v := findVNet(net, vnet)
		if v == nil {
			return pl
		}
		var prefix netip.Prefix
		for _, s := range v.Subnets {
			if s.Name == subnet {
				prefix = s.AddressPrefix.Prefix
			}
		}
		if !prefix.IsValid() {
			return pl
		}
		key := net.Site + "/" + vnet + "/" + subnet + "/" + fmt.Sprint(net == p.TestNetwork)
		if taken[key] == nil {
			taken[key] = map[netip.Addr]bool{}
			for _, a := range net.Appliances {
				taken[key][a.IPAddress.Addr] = true
			}
		}
		free := func(a netip.Addr) bool {
			return a.IsValid() && prefix.Contains(a) && !taken[key][a] && !reservedInSubnet(prefix, a)
		}
		if free(want) {
			taken[key][want] = true
			pl.IP = want
			return pl
		}
		if fromEnd {
			for a := lastAddr(prefix); prefix.Contains(a); a = a.Prev() {
				if free(a) {
					taken[key][a] = true
					pl.IP = a
					return pl
				}
			}
			return pl
		}
		start := want
		if !prefix.Contains(start) {
			start = prefix.Addr()
		}
		for a := start; prefix.Contains(a); a = a.Next() {
			if free(a) {
				taken[key][a] = true
				pl.IP = a
				return pl
			}
		}
		return pl
	}
	vms := slices.Clone(p.spec.Protection.VirtualMachines)
	sort.SliceStable(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	for _, vm := range vms {
		st := p.source[vm.Site]
		if st == nil {
			continue
		}
		for i, nic := range vm.NICs {
			v := st.VNet(nic.VirtualNetwork)
			if v == nil {
				continue
			}
			mm := MachineMap{VM: vm.Name, NIC: i, Source: Placement{Site: vm.Site, VNet: nic.VirtualNetwork, Subnet: nic.Subnet, IP: nic.IPAddress.Addr}}
			want, _ := p.tr.addr(nic.IPAddress.Addr)
			mm.Target = take(p.Target, p.vnetMap[v], nic.Subnet, want, false)
			tw, _ := p.testTr.addr(nic.IPAddress.Addr)
			mm.Test = take(p.TestNetwork, p.testMap[v], nic.Subnet, tw, true)
			p.Machines = append(p.Machines, mm)
			p.Mapping = append(p.Mapping, MapEntry{Kind: "networkInterface", Source: vm.Site + "/" + vm.Name + fmt.Sprintf("/nics/%d", i), Target: mm.Target.Site + "/" + vm.Name + fmt.Sprintf("/nics/%d", i), SourcePrefix: mm.Source.IP.String(), TargetPrefix: mm.Target.IP.String(), Status: "generated"})
		}
	}
}

// reservedInSubnet reports Azure's five reserved addresses of a subnet:
// the network, .1 (gateway), .2 and .3 (DNS), and the broadcast.
func reservedInSubnet(p netip.Prefix, a netip.Addr) bool {
	n := p.Masked().Addr()
	return a == n || a == n.Next() || a == n.Next().Next() || a == n.Next().Next().Next() || a == lastAddr(p)
}

func prefixesString(ps []netip.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ","
		}
		s += p.String()
	}
	return s
}

func specPrefixesString(ps []spec.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ","
		}
		s += p.String()
	}
	return s
}

// byName returns a copy of xs sorted by name, so that generated networks do
// not depend on the order of the spec's lists.
func byName[T any](xs []T, name func(T) string) []T {
	out := slices.Clone(xs)
	sort.SliceStable(out, func(i, j int) bool { return name(out[i]) < name(out[j]) })
	return out
}
