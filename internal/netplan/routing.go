package netplan

import (
	"net/netip"

	"github.com/standby-dr/standby/internal/spec"
)

// Routing is the routing view of networks as they are built, for a
// provider that realises them (netlab installs these routes in its
// namespaces). It is the same computation the tracer uses.
type Routing struct {
	w *world
	s *spec.Spec
}

// NewRouting links the given site networks (one per site; a site may hold
// both its source and pre-provisioned or generated resources). roles names
// each site's role, "source" or "target": on-premises prefers source
// connections on equal prefixes.
func NewRouting(s *spec.Spec, nets []*spec.Network, roles map[string]string) *Routing {
	return &Routing{s: s, w: &world{state: "built", sites: buildSites(s, nets, roles), prefer: "source"}}
}

// Sites returns the linked sites, by name.
func (r *Routing) Sites() []*Site { return sortedSites(r.w.sites) }

// Site returns the named site, or nil.
func (r *Routing) Site(name string) *Site { return r.w.sites[name] }

// SubnetRoutes returns the effective routes of a subnet, or nil when it
// does not exist. The last route is the 0.0.0.0/0 system default.
func (r *Routing) SubnetRoutes(site, vnet, subnet string) []Route {
	st := r.w.sites[site]
	if st == nil {
		return nil
	}
	v := st.VNet(vnet)
	if v == nil {
		return nil
	}
	sn := v.Subnet(subnet)
	if sn == nil {
		return nil
	}
	return r.w.effectiveRoutes(sn, r.s.OnPremises)
}

// Connections returns every connection that carries traffic.
func (r *Routing) Connections() []*Connection { return r.w.allConnections() }

// Best returns the route Azure picks for dst among rs.
func Best(rs []Route, dst netip.Addr) (Route, bool) { return pick(rs, dst) }

// Kinds of Route, exported for providers that show routes.
const (
	RouteSystemDefault = kindSystemDefault
	RouteBGP           = kindBGP
	RouteSystemVNet    = kindSystemVNet
	RouteUser          = kindUser
)
