package local

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/standby-dr/standby/internal/provider"
)

// CreateNetwork records r, checking its references as Azure would.
func (p *Provider) CreateNetwork(ctx context.Context, job string, r provider.Resource) error {
	ref, err := r.Ref()
	if err != nil {
		return fmt.Errorf("local: create: %w", err)
	}
	if job == "" {
		return fmt.Errorf("local: create %s: no job tag: %w", ref, provider.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkParents(ref, r); err != nil {
		return fmt.Errorf("local: create %s: %w", ref, err)
	}
	// A virtual network carries its subnets; they are kept as children.
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
		def = r.Peering
	case r.Connection != nil:
		def = r.Connection
	case r.Host != nil:
		def = r.Host
	}
	p.put(ref, job, def)
	for _, c := range children {
		cref, _ := c.Ref()
		p.put(cref, job, c.Subnet)
	}
	return p.save()
}

// put creates or updates one resource, keeping the job of its maker.
func (p *Provider) put(ref provider.Ref, job string, def any) {
	b, _ := json.Marshal(def)
	if old, ok := p.res[ref]; ok {
		if !bytes.Equal(old.Def, b) {
			old.Def = b
		}
		return
	}
	p.res[ref] = &resource{Ref: ref, Job: job, Def: b}
}

func (p *Provider) has(site string, k provider.Kind, name string) bool {
	_, ok := p.res[provider.Ref{Site: site, Kind: k, Name: name}]
	return ok
}

func notFound(what, name, hint string) error {
	return fmt.Errorf("%s %q does not exist; %s: %w", what, name, hint, provider.ErrNotFound)
}

// checkParents enforces that what a resource names exists at its site.
func (p *Provider) checkParents(ref provider.Ref, r provider.Resource) error {
	site := r.Site
	vnet := func(name string) error {
		if !p.has(site, provider.KindVirtualNetwork, name) {
			return notFound("virtual network", name, "create it first")
		}
		return nil
	}
	subnet := func(v, s string) error {
		if err := vnet(v); err != nil {
			return err
		}
		if !p.has(site, provider.KindSubnet, v+"/"+s) {
			return notFound("subnet", v+"/"+s, "create it first")
		}
		return nil
	}
	switch {
	case r.VirtualNetwork != nil:
		for _, s := range r.VirtualNetwork.Subnets {
			if rt := s.RouteTable; rt != "" && !p.has(site, provider.KindRouteTable, rt) {
				return notFound("route table", rt, "create the route table before the subnet that uses it")
			}
		}
	case r.Subnet != nil:
		if err := vnet(r.Subnet.VirtualNetwork); err != nil {
			return err
		}
		if rt := r.Subnet.RouteTable; rt != "" && !p.has(site, provider.KindRouteTable, rt) {
			return notFound("route table", rt, "create the route table before the subnet that uses it")
		}
	case r.Appliance != nil:
		return subnet(r.Appliance.VirtualNetwork, r.Appliance.Subnet)
	case r.Gateway != nil:
		return subnet(r.Gateway.VirtualNetwork, "GatewaySubnet")
	case r.Peering != nil:
		if err := vnet(r.Peering.From); err != nil {
			return err
		}
		toSite, to := site, r.Peering.To
		if s, v, ok := strings.Cut(to, "/"); ok {
			toSite, to = s, v
		}
		if !p.has(toSite, provider.KindVirtualNetwork, to) {
			return notFound("virtual network", toSite+"/"+to, "create the remote virtual network before peering with it")
		}
	case r.Connection != nil:
		if !p.has(site, provider.KindGateway, r.Connection.Gateway) {
			return notFound("gateway", r.Connection.Gateway, "create the gateway before its connection")
		}
	}
	return nil
}

// DeleteNetwork removes ref, refusing while something depends on it.
func (p *Provider) DeleteNetwork(ctx context.Context, ref provider.Ref) error {
	if ref.Kind == provider.KindVM {
		return fmt.Errorf("local: delete %s: machines are stopped with StopVM: %w", ref, provider.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.res[ref]; !ok {
		return nil
	}
	if users := p.users(ref); len(users) > 0 {
		return fmt.Errorf("local: delete %s: used by %s; delete those first: %w", ref, strings.Join(users, ", "), provider.ErrInUse)
	}
	delete(p.res, ref)
	if ref.Kind == provider.KindVirtualNetwork {
		for r := range p.res {
			if r.Site == ref.Site && r.Kind == provider.KindSubnet && strings.HasPrefix(r.Name, ref.Name+"/") {
				delete(p.res, r)
			}
		}
	}
	return p.save()
}

// users lists the resources that keep ref from being deleted.
func (p *Provider) users(ref provider.Ref) []string {
	var out []string
	for _, r := range p.res {
		if r.Ref.Site != ref.Site {
			continue
		}
		if provider.Uses(r.Ref.Kind, r.Def, ref) {
			out = append(out, string(r.Ref.Kind)+" "+r.Ref.Name)
		}
	}
	return out
}
