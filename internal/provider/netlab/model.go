package netlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/spec"
)

// CreateNetwork creates or updates r, tagged with job, and rebuilds what
// changes because of it.
func (p *Provider) CreateNetwork(ctx context.Context, job string, r provider.Resource) error {
	return p.Apply(ctx, job, r)
}

// Apply creates or updates several resources in order, as CreateNetwork
// does, and rebuilds the lab once at the end. It stops at the first
// resource refused; those before it are kept.
func (p *Provider) Apply(ctx context.Context, job string, rs ...provider.Resource) error {
	if job == "" {
		return fmt.Errorf("netlab: create: no job tag: %w", provider.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return p.withState(ctx, true, func(st *state) error {
		var first error
		changed := false
		for _, r := range rs {
			c, err := p.put(st, job, r)
			changed = changed || c
			if err != nil {
				first = err
				break
			}
		}
		if !changed {
			return first
		}
		if err := p.reconcile(ctx, st); err != nil {
			if first != nil {
				return first
			}
			return err
		}
		return first
	})
}

// put records one resource after checking it as Azure would.
func (p *Provider) put(st *state, job string, r provider.Resource) (bool, error) {
	ref, err := r.Ref()
	if err != nil {
		return false, fmt.Errorf("netlab: create: %w", err)
	}
	if err := p.checkParents(st, r); err != nil {
		return false, fmt.Errorf("netlab: create %s: %w", ref, err)
	}
	var children []provider.Resource
	var def any
	switch {
	case r.VirtualNetwork != nil:
		v := *r.VirtualNetwork
		for _, s := range v.Subnets {
			children = append(children, provider.Resource{Site: r.Site, Subnet: &provider.Subnet{VirtualNetwork: v.Name, Subnet: s}})
		}
		v.Subnets = nil
		def = v
	case r.Subnet != nil:
		def = r.Subnet
	case r.RouteTable != nil:
		def = r.RouteTable
	case r.Appliance != nil:
		def = r.Appliance
	case r.Gateway != nil:
		def = r.Gateway
	case r.Peering != nil:
		if strings.Contains(r.Peering.To, "/") {
			return false, fmt.Errorf("netlab: create %s: peering across sites (%s) is not built: each site is its own fabric: %w", ref, r.Peering.To, provider.ErrInvalid)
		}
		def = r.Peering
	case r.Connection != nil:
		if p.spec.Circuit(r.Connection.Circuit) == nil {
			return false, fmt.Errorf("netlab: create %s: circuit %q is not one of the lab's circuits; give it in the options: %w", ref, r.Connection.Circuit, provider.ErrNotFound)
		}
		def = r.Connection
	case r.Host != nil:
		if p.onPremises(r.Site) == nil {
			return false, fmt.Errorf("netlab: create %s: on-premises site %q is not one of the lab's: %w", ref, r.Site, provider.ErrNotFound)
		}
		def = r.Host
	}
	before := p.overlaps(st)
	old := slices.Clone(st.Resources)
	changed := putRes(st, ref, job, def)
	for _, c := range children {
		cref, _ := c.Ref()
		changed = putRes(st, cref, job, c.Subnet) || changed
	}
	if !changed {
		return false, nil
	}
	if !p.opts.Force {
		for _, o := range p.overlaps(st) {
			if !slices.Contains(before, o) {
				st.Resources = old
				return false, fmt.Errorf("netlab: create %s: rule ER-04: %s; Azure refuses two virtual networks with overlapping prefixes on one circuit: delete the other connection first (with one circuit and the same IPs, the source connection goes before the target one is made): %w", ref, o, provider.ErrConflict)
			}
		}
	}
	return true, nil
}

// putRes creates or updates one resource, keeping its maker's job.
func putRes(st *state, ref provider.Ref, job string, def any) bool {
	b, _ := json.Marshal(def)
	for i, r := range st.Resources {
		if r.Ref == ref {
			if sameJSON(r.Def, b) {
				return false
			}
			st.Resources[i] = &resource{Ref: ref, Job: r.Job, Def: b}
			return true
		}
	}
	st.Resources = append(st.Resources, &resource{Ref: ref, Job: job, Def: b})
	return true
}

// sameJSON compares two JSON texts whatever their indentation (the state
// file indents what it holds).
func sameJSON(a, b []byte) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}

func (p *Provider) onPremises(name string) *spec.OnPremises {
	for i := range p.opts.OnPremises {
		if p.opts.OnPremises[i].Name == name {
			return &p.opts.OnPremises[i]
		}
	}
	return nil
}

func notFound(what, name, hint string) error {
	return fmt.Errorf("%s %q does not exist; %s: %w", what, name, hint, provider.ErrNotFound)
}

func has(st *state, site string, k provider.Kind, name string) bool {
	return st.find(provider.Ref{Site: site, Kind: k, Name: name}) != nil
}

// checkParents enforces that what a resource names exists at its site.
func (p *Provider) checkParents(st *state, r provider.Resource) error {
	site := r.Site
	vnet := func(name string) error {
		if !has(st, site, provider.KindVirtualNetwork, name) {
			return notFound("virtual network", name, "create it first")
		}
		return nil
	}
	subnet := func(v, s string) error {
		if err := vnet(v); err != nil {
			return err
		}
		if !has(st, site, provider.KindSubnet, v+"/"+s) {
			return notFound("subnet", v+"/"+s, "create it first")
		}
		return nil
	}
	rt := func(name string) error {
		if name != "" && !has(st, site, provider.KindRouteTable, name) {
			return notFound("route table", name, "create the route table before the subnet that uses it")
		}
		return nil
	}
	switch {
	case r.VirtualNetwork != nil:
		for _, s := range r.VirtualNetwork.Subnets {
			if err := rt(s.RouteTable); err != nil {
				return err
			}
		}
	case r.Subnet != nil:
		if err := vnet(r.Subnet.VirtualNetwork); err != nil {
			return err
		}
		return rt(r.Subnet.RouteTable)
	case r.Appliance != nil:
		return subnet(r.Appliance.VirtualNetwork, r.Appliance.Subnet)
	case r.Gateway != nil:
		return subnet(r.Gateway.VirtualNetwork, "GatewaySubnet")
	case r.Peering != nil:
		if err := vnet(r.Peering.From); err != nil {
			return err
		}
		return vnet(r.Peering.To)
	case r.Connection != nil:
		if !has(st, site, provider.KindGateway, r.Connection.Gateway) {
			return notFound("gateway", r.Connection.Gateway, "create the gateway before its connection")
		}
	}
	return nil
}

// DeleteNetwork removes ref, refusing while something depends on it.
func (p *Provider) DeleteNetwork(ctx context.Context, ref provider.Ref) error {
	if ref.Kind == provider.KindVM {
		return fmt.Errorf("netlab: delete %s: machines are stopped with StopVM: %w", ref, provider.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return p.withState(ctx, true, func(st *state) error {
		if st.find(ref) == nil {
			return nil
		}
		if users := users(st, ref); len(users) > 0 {
			return fmt.Errorf("netlab: delete %s: used by %s; delete those first: %w", ref, strings.Join(users, ", "), provider.ErrInUse)
		}
		st.Resources = slices.DeleteFunc(st.Resources, func(r *resource) bool {
			return r.Ref == ref || ref.Kind == provider.KindVirtualNetwork && r.Ref.Site == ref.Site &&
				r.Ref.Kind == provider.KindSubnet && strings.HasPrefix(r.Ref.Name, ref.Name+"/")
		})
		return p.reconcile(ctx, st)
	})
}

// users lists what keeps ref from being deleted.
func users(st *state, ref provider.Ref) []string {
	var out []string
	for _, r := range st.Resources {
		if r.Ref.Site != ref.Site {
			continue
		}
		if provider.Uses(r.Ref.Kind, r.Def, ref) {
			out = append(out, string(r.Ref.Kind)+" "+r.Ref.Name)
		}
	}
	for _, m := range st.Machines {
		if m.Site != ref.Site {
			continue
		}
		var d vmDef
		json.Unmarshal(m.Def, &d)
		for _, n := range d.NICs {
			if ref.Kind == provider.KindVirtualNetwork && n.VirtualNetwork == ref.Name ||
				ref.Kind == provider.KindSubnet && n.VirtualNetwork+"/"+n.Subnet == ref.Name {
				out = append(out, "machine "+m.Name)
				break
			}
		}
	}
	return out
}

// networks rebuilds each site's spec network from the resources.
func networks(st *state) []*spec.Network {
	bySite := map[string]*spec.Network{}
	get := func(site string) *spec.Network {
		n := bySite[site]
		if n == nil {
			n = &spec.Network{Site: site}
			bySite[site] = n
		}
		return n
	}
	res := slices.Clone(st.Resources)
	slices.SortStableFunc(res, func(a, b *resource) int { return strings.Compare(a.Ref.String(), b.Ref.String()) })
	subnets := map[string][]spec.Subnet{}
	for _, r := range res {
		if r.Ref.Kind == provider.KindSubnet {
			var s provider.Subnet
			json.Unmarshal(r.Def, &s)
			k := r.Ref.Site + "/" + s.VirtualNetwork
			subnets[k] = append(subnets[k], s.Subnet)
		}
	}
	for _, r := range res {
		switch r.Ref.Kind {
		case provider.KindVirtualNetwork:
			var v spec.VirtualNetwork
			json.Unmarshal(r.Def, &v)
			v.Subnets = subnets[r.Ref.Site+"/"+v.Name]
			n := get(r.Ref.Site)
			n.VirtualNetworks = append(n.VirtualNetworks, v)
		case provider.KindRouteTable:
			var v spec.RouteTable
			json.Unmarshal(r.Def, &v)
			n := get(r.Ref.Site)
			n.RouteTables = append(n.RouteTables, v)
		case provider.KindAppliance:
			var v spec.Appliance
			json.Unmarshal(r.Def, &v)
			n := get(r.Ref.Site)
			n.Appliances = append(n.Appliances, v)
		case provider.KindGateway:
			var v spec.Gateway
			json.Unmarshal(r.Def, &v)
			n := get(r.Ref.Site)
			n.Gateways = append(n.Gateways, v)
		case provider.KindPeering:
			var v spec.Peering
			json.Unmarshal(r.Def, &v)
			n := get(r.Ref.Site)
			n.Peerings = append(n.Peerings, v)
		case provider.KindConnection:
			var v spec.Connection
			json.Unmarshal(r.Def, &v)
			n := get(r.Ref.Site)
			n.Connections = append(n.Connections, v)
		}
	}
	var out []*spec.Network
	for _, n := range bySite {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *spec.Network) int { return strings.Compare(a.Site, b.Site) })
	return out
}

// routing links the lab's networks with netplan.
func (p *Provider) routing(st *state) *netplan.Routing {
	nets := networks(st)
	s := *p.spec
	s.Sites = nil
	roles := map[string]string{}
	for _, n := range nets {
		s.Sites = append(s.Sites, spec.Site{Name: n.Site, Provider: "netlab"})
		roles[n.Site] = "source"
		if r := p.opts.Roles[n.Site]; r != "" {
			roles[n.Site] = r
		}
	}
	return netplan.NewRouting(&s, nets, roles)
}

// overlaps describes every pair of connections on one circuit whose hubs
// advertise overlapping prefixes (rule ER-04).
func (p *Provider) overlaps(st *state) []string {
	conns := p.routing(st).Connections()
	var out []string
	for i, a := range conns {
		for _, b := range conns[i+1:] {
			if a.Circuit.Name != b.Circuit.Name || a.Gateway == b.Gateway || a.Gateway.VNet == nil || b.Gateway.VNet == nil {
				continue
			}
			if x, y, ok := overlap(netplan.Advertised(a.Gateway.VNet), netplan.Advertised(b.Gateway.VNet)); ok {
				out = append(out, fmt.Sprintf("connection %s advertises %s and connection %s advertises %s on circuit %s",
					a.ID(), x, b.ID(), y, a.Circuit.Name))
			}
		}
	}
	return out
}

func overlap(a, b []netip.Prefix) (netip.Prefix, netip.Prefix, bool) {
	for _, x := range a {
		for _, y := range b {
			if x.Overlaps(y) {
				return x, y, true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}
