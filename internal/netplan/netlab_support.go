package netplan

// What a provider that builds networks (netlab) needs of the routing view
// beyond the effective routes: where a VirtualNetworkGateway next hop leads,
// and which connections of a gateway carry traffic.

// GatewaysFor returns the ExpressRoute gateways whose routes subnets of v
// learn: v's own, then its hub's through useRemoteGateways. A route that
// names VirtualNetworkGateway without a gateway goes to the first.
func (r *Routing) GatewaysFor(v *VNet) []*Gateway { return r.w.gatewaysFor(v) }

// ActiveConnections returns the connections of g that carry traffic (the
// circuit is enabled and provisioned).
func (r *Routing) ActiveConnections(g *Gateway) []*Connection { return r.w.activeConnections(g) }
