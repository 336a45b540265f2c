package spec

import (
	"fmt"
	"net/netip"
	"strings"
)

// checker gathers the problems that need the whole document: enums,
// ranges, unique names and references.
type checker struct {
	s    *Spec
	errs Errors
}

func (c *checker) fail(path, format string, args ...any) {
	e := &Error{File: c.s.File, Path: path, Msg: fmt.Sprintf(format, args...)}
	if p, ok := c.s.pos[path]; ok {
		e.Line, e.Column = p.Line, p.Column
	} else {
		// The field is absent: point at the nearest enclosing one.
		for q := parentPath(path); q != ""; q = parentPath(q) {
			if p, ok := c.s.pos[q]; ok {
				e.Line, e.Column = p.Line, p.Column
				break
			}
		}
	}
	c.errs = append(c.errs, e)
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (c *checker) required(path, value string) bool {
	if strings.TrimSpace(value) == "" {
		c.fail(path, "is required")
		return false
	}
	return true
}

func (c *checker) oneOf(path, value string, allowed ...string) {
	if value == "" {
		return
	}
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	c.fail(path, "%q is not one of %s", value, strings.Join(allowed, ", "))
}

// unique reports a name met twice in one kind and scope.
type unique struct {
	c    *checker
	kind string
	seen map[string]string
}

func (c *checker) unique(kind string) *unique {
	return &unique{c: c, kind: kind, seen: map[string]string{}}
}

func (u *unique) add(path, name string) {
	if name == "" {
		return
	}
	if first, ok := u.seen[name]; ok {
		u.c.fail(path, "duplicate %s name %q (first at %s)", u.kind, name, first)
		return
	}
	u.seen[name] = path
}

func (s *Spec) check() Errors {
	c := &checker{s: s}
	if s.Version != 1 {
		if s.Has("version") {
			c.fail("version", "version %d is not supported; this standby reads version 1", s.Version)
		} else {
			c.fail("version", "is required: write `version: 1` at the top")
		}
	}
	c.required("name", s.Name)

	sites := map[string]*Site{}
	us := c.unique("site")
	for i := range s.Sites {
		st := &s.Sites[i]
		p := fmt.Sprintf("sites[%d]", i)
		c.required(p+".name", st.Name)
		us.add(p+".name", st.Name)
		sites[st.Name] = st
		c.required(p+".region", st.Region)
		if c.required(p+".provider", st.Provider) {
			c.oneOf(p+".provider", st.Provider, "local", "netlab", "azure")
		}
	}
	if len(s.Sites) == 0 {
		c.fail("sites", "at least one site is required")
	}

	onprem := map[string]*OnPremises{}
	uo := c.unique("on-premises site")
	for i := range s.OnPremises {
		o := &s.OnPremises[i]
		p := fmt.Sprintf("onPremises[%d]", i)
		c.required(p+".name", o.Name)
		uo.add(p+".name", o.Name)
		onprem[o.Name] = o
		uh := c.unique("host")
		for j, h := range o.Hosts {
			hp := fmt.Sprintf("%s.hosts[%d]", p, j)
			c.required(hp+".name", h.Name)
			uh.add(hp+".name", h.Name)
			if h.IPAddress.IsZero() {
				c.fail(hp+".ipAddress", "is required")
			} else if !inAny(h.IPAddress.Addr, o.AddressSpace) {
				c.fail(hp+".ipAddress", "%s is outside on-premises site %q's address space %s", h.IPAddress, o.Name, prefixList(o.AddressSpace))
			}
		}
	}

	circuits := map[string]*Circuit{}
	uc := c.unique("circuit")
	for i := range s.Circuits {
		ci := &s.Circuits[i]
		p := fmt.Sprintf("circuits[%d]", i)
		c.required(p+".name", ci.Name)
		uc.add(p+".name", ci.Name)
		circuits[ci.Name] = ci
		c.required(p+".peeringLocation", ci.PeeringLocation)
		if c.required(p+".tier", ci.Tier) {
			c.oneOf(p+".tier", ci.Tier, "Local", "Standard", "Premium")
		}
		if ci.BandwidthMbps <= 0 {
			c.fail(p+".bandwidthMbps", "must be a positive number of Mbps (50, 100, 200, 500, 1000, 2000, 5000, 10000)")
		}
		if ci.OnPremises != "" && onprem[ci.OnPremises] == nil {
			c.fail(p+".onPremises", "circuit %q names on-premises site %q, which is not in onPremises[]", ci.Name, ci.OnPremises)
		}
		c.oneOf(p+".provisioningState", ci.ProvisioningState, "Provisioned", "NotProvisioned", "Provisioning", "Deprovisioning")
		if pp := ci.PrivatePeering; pp != nil {
			for _, f := range []struct {
				name string
				v    Prefix
			}{{"primaryPeerAddressPrefix", pp.PrimaryPeerAddressPrefix}, {"secondaryPeerAddressPrefix", pp.SecondaryPeerAddressPrefix}} {
				if f.v.IsValid() && f.v.Bits() != 30 {
					c.fail(p+".privatePeering."+f.name, "%s must be a /30", f.v)
				}
			}
		}
	}
	for i, ci := range s.Circuits {
		for j, g := range ci.GlobalReach {
			if circuits[g] == nil {
				c.fail(fmt.Sprintf("circuits[%d].globalReach[%d]", i, j), "circuit %q links with Global Reach to %q, which is not in circuits[]", ci.Name, g)
			}
		}
	}

	un := c.unique("network site")
	vnetsBySite := map[string]map[string]*VirtualNetwork{}
	for i := range s.Networks {
		c.checkNetwork(i, sites, circuits, un, vnetsBySite)
	}

	c.checkProtection(sites, vnetsBySite)
	c.checkRecovery(sites, circuits, onprem, vnetsBySite)
	return c.errs
}

func (c *checker) checkNetwork(i int, sites map[string]*Site, circuits map[string]*Circuit, un *unique, vnetsBySite map[string]map[string]*VirtualNetwork) {
	n := &c.s.Networks[i]
	p := fmt.Sprintf("networks[%d]", i)
	if c.required(p+".site", n.Site) {
		if sites[n.Site] == nil {
			c.fail(p+".site", "network names site %q, which is not in sites[]", n.Site)
		}
		un.add(p+".site", n.Site)
	}
	vnets := map[string]*VirtualNetwork{}
	vnetsBySite[n.Site] = vnets
	rts := map[string]bool{}
	ur := c.unique("route table")
	for j, rt := range n.RouteTables {
		rp := fmt.Sprintf("%s.routeTables[%d]", p, j)
		c.required(rp+".name", rt.Name)
		ur.add(rp+".name", rt.Name)
		rts[rt.Name] = true
		uro := c.unique("route")
		for k, r := range rt.Routes {
			rrp := fmt.Sprintf("%s.routes[%d]", rp, k)
			c.required(rrp+".name", r.Name)
			uro.add(rrp+".name", r.Name)
			if r.AddressPrefix.IsZero() {
				c.fail(rrp+".addressPrefix", "is required")
			}
			if c.required(rrp+".nextHopType", r.NextHopType) {
				c.oneOf(rrp+".nextHopType", r.NextHopType, NextHopVirtualAppliance, NextHopVirtualNetworkGateway, NextHopVnetLocal, NextHopInternet, NextHopNone)
			}
		}
	}
	uv := c.unique("virtual network")
	for j := range n.VirtualNetworks {
		v := &n.VirtualNetworks[j]
		vp := fmt.Sprintf("%s.virtualNetworks[%d]", p, j)
		c.required(vp+".name", v.Name)
		uv.add(vp+".name", v.Name)
		vnets[v.Name] = v
		if len(v.AddressSpace) == 0 {
			c.fail(vp+".addressSpace", "at least one prefix is required")
		}
		usn := c.unique("subnet")
		for k, sn := range v.Subnets {
			sp := fmt.Sprintf("%s.subnets[%d]", vp, k)
			c.required(sp+".name", sn.Name)
			usn.add(sp+".name", sn.Name)
			if sn.AddressPrefix.IsZero() {
				c.fail(sp+".addressPrefix", "is required")
			} else if !prefixInAny(sn.AddressPrefix.Prefix, v.AddressSpace) {
				c.fail(sp+".addressPrefix", "%s is outside virtual network %q's address space %s", sn.AddressPrefix, v.Name, prefixList(v.AddressSpace))
			}
			for l := 0; l < k; l++ {
				if o := v.Subnets[l]; o.AddressPrefix.IsValid() && sn.AddressPrefix.IsValid() && o.AddressPrefix.Overlaps(sn.AddressPrefix.Prefix) {
					c.fail(sp+".addressPrefix", "%s overlaps subnet %q (%s) of the same virtual network", sn.AddressPrefix, o.Name, o.AddressPrefix)
				}
			}
			if sn.RouteTable != "" && !rts[sn.RouteTable] {
				c.fail(sp+".routeTable", "subnet %s/%s names route table %q, which is not in %s.routeTables (site %q); a subnet can use only its own site's tables", v.Name, sn.Name, sn.RouteTable, p, n.Site)
			}
		}
	}
	up := c.unique("peering")
	for j, pe := range n.Peerings {
		pp := fmt.Sprintf("%s.peerings[%d]", p, j)
		c.required(pp+".name", pe.Name)
		up.add(pp+".name", pe.Name)
		if c.required(pp+".from", pe.From) && vnets[pe.From] == nil {
			c.fail(pp+".from", "peering %q starts at virtual network %q, which is not in site %q", pe.Name, pe.From, n.Site)
		}
		if c.required(pp+".to", pe.To) {
			if site, vnet, ok := strings.Cut(pe.To, "/"); ok {
				if sites[site] == nil {
					c.fail(pp+".to", "peering %q goes to site %q, which is not in sites[]", pe.Name, site)
				} else if !c.vnetExists(site, vnet) {
					c.fail(pp+".to", "peering %q goes to virtual network %q, which is not in site %q", pe.Name, vnet, site)
				}
			} else if vnets[pe.To] == nil {
				c.fail(pp+".to", "peering %q goes to virtual network %q, which is not in site %q (write site/vnet for another site)", pe.Name, pe.To, n.Site)
			}
		}
		if pe.From != "" && pe.From == pe.To {
			c.fail(pp+".to", "peering %q connects virtual network %q to itself", pe.Name, pe.From)
		}
	}
	ua := c.unique("appliance")
	for j, a := range n.Appliances {
		ap := fmt.Sprintf("%s.appliances[%d]", p, j)
		c.required(ap+".name", a.Name)
		ua.add(ap+".name", a.Name)
		c.checkNICRef(ap, n.Site, vnets, a.VirtualNetwork, a.Subnet, a.IPAddress, "appliance "+a.Name, true)
	}
	gws := map[string]bool{}
	ug := c.unique("gateway")
	for j, g := range n.Gateways {
		gp := fmt.Sprintf("%s.gateways[%d]", p, j)
		c.required(gp+".name", g.Name)
		ug.add(gp+".name", g.Name)
		gws[g.Name] = true
		if c.required(gp+".virtualNetwork", g.VirtualNetwork) && vnets[g.VirtualNetwork] == nil {
			c.fail(gp+".virtualNetwork", "gateway %q is in virtual network %q, which is not in site %q", g.Name, g.VirtualNetwork, n.Site)
		}
		if c.required(gp+".type", g.Type) {
			c.oneOf(gp+".type", g.Type, "ExpressRoute", "Vpn")
		}
		if c.required(gp+".sku", g.Sku) {
			c.oneOf(gp+".sku", g.Sku, "Standard", "HighPerformance", "UltraPerformance", "ErGw1AZ", "ErGw2AZ", "ErGw3AZ", "ErGwScale", "VpnGw1", "VpnGw2", "VpnGw3", "VpnGw1AZ", "VpnGw2AZ", "VpnGw3AZ")
		}
		c.oneOf(gp+".publicIpSku", g.PublicIPSku, "Standard", "Basic")
	}
	ucn := c.unique("connection")
	for j, cn := range n.Connections {
		cp := fmt.Sprintf("%s.connections[%d]", p, j)
		c.required(cp+".name", cn.Name)
		ucn.add(cp+".name", cn.Name)
		if c.required(cp+".gateway", cn.Gateway) && !gws[cn.Gateway] {
			c.fail(cp+".gateway", "connection %q uses gateway %q, which is not in site %q", cn.Name, cn.Gateway, n.Site)
		}
		if c.required(cp+".circuit", cn.Circuit) && circuits[cn.Circuit] == nil {
			c.fail(cp+".circuit", "connection %q names circuit %q, which is not in circuits[]", cn.Name, cn.Circuit)
		}
		if cn.RoutingWeight < 0 || cn.RoutingWeight > 32000 {
			c.fail(cp+".routingWeight", "%d is outside 0-32000", cn.RoutingWeight)
		}
	}
}

// vnetExists looks a VNet up in the raw document, so that forward references
// to a later site's network resolve.
func (c *checker) vnetExists(site, vnet string) bool {
	for _, n := range c.s.Networks {
		if n.Site != site {
			continue
		}
		for _, v := range n.VirtualNetworks {
			if v.Name == vnet {
				return true
			}
		}
	}
	return false
}

func (c *checker) checkNICRef(p, site string, vnets map[string]*VirtualNetwork, vnet, subnet string, ip Addr, what string, ipRequired bool) {
	if !c.required(p+".virtualNetwork", vnet) {
		return
	}
	v := vnets[vnet]
	if v == nil {
		c.fail(p+".virtualNetwork", "%s is in virtual network %q, which is not in site %q", what, vnet, site)
		return
	}
	if !c.required(p+".subnet", subnet) {
		return
	}
	var sn *Subnet
	for i := range v.Subnets {
		if v.Subnets[i].Name == subnet {
			sn = &v.Subnets[i]
		}
	}
	if sn == nil {
		c.fail(p+".subnet", "%s is in subnet %q, which is not in virtual network %q", what, subnet, vnet)
		return
	}
	if ip.IsZero() {
		if ipRequired {
			c.fail(p+".ipAddress", "is required")
		}
		return
	}
	if sn.AddressPrefix.IsValid() && !sn.AddressPrefix.Contains(ip.Addr) {
		c.fail(p+".ipAddress", "%s of %s is outside subnet %s/%s (%s)", ip, what, vnet, subnet, sn.AddressPrefix)
	}
}

func (c *checker) checkProtection(sites map[string]*Site, vnetsBySite map[string]map[string]*VirtualNetwork) {
	pr := &c.s.Protection
	policies := map[string]bool{}
	up := c.unique("policy")
	for i, po := range pr.Policies {
		p := fmt.Sprintf("protection.policies[%d]", i)
		c.required(p+".name", po.Name)
		up.add(p+".name", po.Name)
		policies[po.Name] = true
		if c.s.Has(p+".uploadThreadsPerVM") && (po.UploadThreadsPerVM < 1 || po.UploadThreadsPerVM > 32) {
			c.fail(p+".uploadThreadsPerVM", "%d is outside 1-32", po.UploadThreadsPerVM)
		}
		if po.BandwidthLimitMbps < 0 {
			c.fail(p+".bandwidthLimitMbps", "must not be negative")
		}
		c.oneOf(p+".capture", po.Capture, CaptureTracked, CaptureScan)
		if c.s.Has(p + ".blockSize") {
			bs := int64(po.BlockSize)
			if bs < 64<<10 || bs > 64<<20 || bs&(bs-1) != 0 {
				c.fail(p+".blockSize", "%s must be a power of two from 64KiB to 64MiB", po.BlockSize)
			}
		}
		if c.s.Has(p+".recoveryPointRetention") && po.RecoveryPointRetention.Duration == 0 {
			c.fail(p+".recoveryPointRetention", "must be longer than 0")
		}
	}
	uv := c.unique("virtual machine")
	for i, vm := range pr.VirtualMachines {
		p := fmt.Sprintf("protection.virtualMachines[%d]", i)
		c.required(p+".name", vm.Name)
		uv.add(p+".name", vm.Name)
		if c.required(p+".site", vm.Site) && sites[vm.Site] == nil {
			c.fail(p+".site", "virtual machine %q runs at site %q, which is not in sites[]", vm.Name, vm.Site)
		}
		if c.required(p+".policy", vm.Policy) && !policies[vm.Policy] {
			c.fail(p+".policy", "virtual machine %q uses policy %q, which is not in protection.policies[]", vm.Name, vm.Policy)
		}
		for j, nic := range vm.NICs {
			np := fmt.Sprintf("%s.nics[%d]", p, j)
			c.checkNICRef(np, vm.Site, vnetsBySite[vm.Site], nic.VirtualNetwork, nic.Subnet, nic.IPAddress, "virtual machine "+vm.Name, false)
		}
		ud := c.unique("disk")
		for j := range vm.Disks {
			d := &pr.VirtualMachines[i].Disks[j]
			dp := fmt.Sprintf("%s.disks[%d]", p, j)
			if c.required(dp+".name", d.Name) && !diskNameOK(d.Name) {
				c.fail(dp+".name", "%q: a disk name is letters, digits, - and _", d.Name)
			}
			ud.add(dp+".name", d.Name)
			switch {
			case d.SizeGiB < 0:
				c.fail(dp+".sizeGiB", "must be positive")
			case d.SizeGiB > 0 && d.Size > 0:
				c.fail(dp+".size", "give sizeGiB or size, not both")
			case d.SizeGiB == 0 && d.Size == 0:
				c.fail(dp+".size", "disk %q needs sizeGiB or size", d.Name)
			}
		}
		if b := vm.Boot; b != nil && len(b.Command) == 0 {
			c.fail(p+".boot.command", "is required when boot is given")
		}
		if h := vm.HealthCheck; h != nil {
			if (h.HTTP == nil) == (h.TCP == nil) {
				c.fail(p+".healthCheck", "give exactly one of http or tcp")
			}
			if h.HTTP != nil && (h.HTTP.Port < 1 || h.HTTP.Port > 65535) {
				c.fail(p+".healthCheck.http.port", "%d is not a port", h.HTTP.Port)
			}
			if h.TCP != nil && (h.TCP.Port < 1 || h.TCP.Port > 65535) {
				c.fail(p+".healthCheck.tcp.port", "%d is not a port", h.TCP.Port)
			}
		}
	}
}

func diskNameOK(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *checker) checkRecovery(sites map[string]*Site, circuits map[string]*Circuit, onprem map[string]*OnPremises, vnetsBySite map[string]map[string]*VirtualNetwork) {
	r := &c.s.Recovery
	vms := map[string]*VirtualMachine{}
	for i := range c.s.Protection.VirtualMachines {
		vms[c.s.Protection.VirtualMachines[i].Name] = &c.s.Protection.VirtualMachines[i]
	}
	if r.TargetSite == "" {
		if len(c.s.Protection.VirtualMachines) > 0 {
			c.fail("recovery.targetSite", "is required: the site machines fail over to")
		}
	} else if sites[r.TargetSite] == nil {
		c.fail("recovery.targetSite", "%q is not in sites[]", r.TargetSite)
	} else {
		for i, vm := range c.s.Protection.VirtualMachines {
			if vm.Site == r.TargetSite {
				c.fail(fmt.Sprintf("protection.virtualMachines[%d].site", i), "virtual machine %q already runs at the target site %q; protect machines of another site", vm.Name, vm.Site)
			}
		}
	}
	nm := &r.NetworkMapping
	c.oneOf("recovery.networkMapping.addressing", nm.Addressing, AddressingSame, AddressingTranslate)
	for i, t := range nm.AddressTranslation {
		p := fmt.Sprintf("recovery.networkMapping.addressTranslation[%d]", i)
		if t.From.IsZero() || t.To.IsZero() {
			c.fail(p, "needs both from and to")
		} else if t.From.Bits() != t.To.Bits() {
			c.fail(p+".to", "%s and %s differ in length; a translation maps a prefix onto one of equal length", t.From, t.To)
		}
	}
	if nm.Addressing == AddressingTranslate && len(nm.AddressTranslation) == 0 {
		c.fail("recovery.networkMapping.addressTranslation", "addressing translate needs at least one from/to pair")
	}
	for i, name := range nm.Connectivity.Circuits {
		if circuits[name] == nil {
			c.fail(fmt.Sprintf("recovery.networkMapping.connectivity.circuits[%d]", i), "circuit %q is not in circuits[]", name)
		}
	}
	if hub := nm.Connectivity.Hub; hub != "" {
		found := false
		for site, vnets := range vnetsBySite {
			if site != r.TargetSite && vnets[hub] != nil {
				found = true
			}
		}
		if !found {
			c.fail("recovery.networkMapping.connectivity.hub", "hub %q is not a virtual network of a source site", hub)
		}
	}
	c.oneOf("recovery.networkMapping.connectivity.gatewaySku", nm.Connectivity.GatewaySku, "Standard", "HighPerformance", "UltraPerformance", "ErGw1AZ", "ErGw2AZ", "ErGw3AZ", "ErGwScale")
	c.oneOf("recovery.networkMapping.testNetwork.addressing", nm.TestNetwork.Addressing, AddressingSame, AddressingTranslate)

	upl := c.unique("plan")
	for i, pl := range r.Plans {
		p := fmt.Sprintf("recovery.plans[%d]", i)
		c.required(p+".name", pl.Name)
		upl.add(p+".name", pl.Name)
		ug := c.unique("group")
		inPlan := map[string]string{}
		for j, g := range pl.Groups {
			gp := fmt.Sprintf("%s.groups[%d]", p, j)
			c.required(gp+".name", g.Name)
			ug.add(gp+".name", g.Name)
			for k, vm := range g.VirtualMachines {
				vp := fmt.Sprintf("%s.virtualMachines[%d]", gp, k)
				if vms[vm] == nil {
					c.fail(vp, "plan %q group %q names virtual machine %q, which is not in protection.virtualMachines[]", pl.Name, g.Name, vm)
				} else if prev, ok := inPlan[vm]; ok {
					c.fail(vp, "virtual machine %q is already in group %q of plan %q", vm, prev, pl.Name)
				}
				inPlan[vm] = g.Name
			}
			for _, list := range []struct {
				name    string
				actions []Action
			}{{"pre", g.Pre}, {"post", g.Post}} {
				for k, a := range list.actions {
					c.checkAction(fmt.Sprintf("%s.%s[%d]", gp, list.name, k), a, onprem, vms, sites)
				}
			}
		}
	}
}

func (c *checker) checkAction(p string, a Action, onprem map[string]*OnPremises, vms map[string]*VirtualMachine, sites map[string]*Site) {
	n := 0
	if a.Script != nil {
		n++
		if len(a.Script.Command) == 0 {
			c.fail(p+".script.command", "is required")
		}
	}
	if a.Manual != nil {
		n++
		c.required(p+".manual.instruction", a.Manual.Instruction)
	}
	if a.Check != nil {
		n++
		ch := a.Check
		if c.required(p+".check.from", ch.From) {
			left, right, ok := strings.Cut(ch.From, "/")
			switch {
			case !ok:
				c.fail(p+".check.from", "%q: write onprem/host or site/vm", ch.From)
			case onprem[left] != nil:
				found := false
				for _, h := range onprem[left].Hosts {
					found = found || h.Name == right
				}
				if !found {
					c.fail(p+".check.from", "on-premises site %q has no host %q", left, right)
				}
			case sites[left] != nil:
				if vm := vms[right]; vm == nil || vm.Site != left {
					c.fail(p+".check.from", "site %q has no protected virtual machine %q", left, right)
				}
			default:
				c.fail(p+".check.from", "%q is neither an on-premises site nor a site", left)
			}
		}
		if (ch.HTTP == "") == (ch.TCP == "") {
			c.fail(p+".check", "give exactly one of http or tcp")
		}
		if ch.TCP != "" {
			if _, err := netip.ParseAddrPort(ch.TCP); err != nil {
				c.fail(p+".check.tcp", "%q: write ip:port", ch.TCP)
			}
		}
		if ch.HTTP != "" && !strings.HasPrefix(ch.HTTP, "http://") && !strings.HasPrefix(ch.HTTP, "https://") {
			c.fail(p+".check.http", "%q: write an http:// or https:// URL", ch.HTTP)
		}
	}
	if n != 1 {
		c.fail(p, "an action is exactly one of script, manual or check")
	}
}

func inAny(a netip.Addr, ps []Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func prefixInAny(sub netip.Prefix, ps []Prefix) bool {
	for _, p := range ps {
		if p.Bits() <= sub.Bits() && p.Contains(sub.Addr()) {
			return true
		}
	}
	return false
}

func prefixList(ps []Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}
