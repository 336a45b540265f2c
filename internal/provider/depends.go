package provider

import (
	"encoding/json"

	"github.com/standby-dr/standby/internal/spec"
)

// Uses reports whether a resource of kind, defined by def (its Resource
// field as JSON), depends on ref at the same site, so that Azure refuses to
// delete ref while it exists: an appliance or a gateway on a VNet or its
// subnet, a connection on its gateway, a subnet on its route table.
func Uses(kind Kind, def json.RawMessage, ref Ref) bool {
	switch kind {
	case KindAppliance:
		var a spec.Appliance
		_ = json.Unmarshal(def, &a)
		return (ref.Kind == KindVirtualNetwork && a.VirtualNetwork == ref.Name) ||
			(ref.Kind == KindSubnet && a.VirtualNetwork+"/"+a.Subnet == ref.Name)
	case KindGateway:
		var g spec.Gateway
		_ = json.Unmarshal(def, &g)
		return (ref.Kind == KindVirtualNetwork && g.VirtualNetwork == ref.Name) ||
			(ref.Kind == KindSubnet && g.VirtualNetwork+"/GatewaySubnet" == ref.Name)
	case KindConnection:
		var c spec.Connection
		_ = json.Unmarshal(def, &c)
		return ref.Kind == KindGateway && c.Gateway == ref.Name
	case KindSubnet:
		var s Subnet
		_ = json.Unmarshal(def, &s)
		return ref.Kind == KindRouteTable && s.RouteTable == ref.Name
	}
	return false
}
