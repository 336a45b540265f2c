package provider

import (
	"slices"

	"github.com/standby-dr/standby/internal/spec"
)

// Resources lists the resources of a site's network in an order that
// creates parents first: route tables, virtual networks (with their
// subnets), appliances, gateways, peerings (the side that allows gateway
// transit first), connections.
func Resources(n *spec.Network) []Resource {
	var out []Resource
	site := n.Site
	for i := range n.RouteTables {
		out = append(out, Resource{Site: site, RouteTable: &n.RouteTables[i]})
	}
	for i := range n.VirtualNetworks {
		out = append(out, Resource{Site: site, VirtualNetwork: &n.VirtualNetworks[i]})
	}
	for i := range n.Appliances {
		out = append(out, Resource{Site: site, Appliance: &n.Appliances[i]})
	}
	for i := range n.Gateways {
		out = append(out, Resource{Site: site, Gateway: &n.Gateways[i]})
	}
	pes := make([]*spec.Peering, 0, len(n.Peerings))
	for i := range n.Peerings {
		pes = append(pes, &n.Peerings[i])
	}
	slices.SortStableFunc(pes, func(a, b *spec.Peering) int {
		return btoi(b.AllowGatewayTransit) - btoi(a.AllowGatewayTransit)
	})
	for _, pe := range pes {
		out = append(out, Resource{Site: site, Peering: pe})
	}
	for i := range n.Connections {
		out = append(out, Resource{Site: site, Connection: &n.Connections[i]})
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
