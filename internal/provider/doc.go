// Package provider is the site interface: what the orchestrator needs of a
// place machines run. A provider builds and tears down a site's networks
// (virtual networks, subnets, route tables, appliances, gateways, peerings,
// circuit connections, on-premises hosts), starts and stops machines from
// disk files, runs checks from a host, and lists what it made.
//
// The contract every implementation keeps, and that providertest checks:
//   - Every call takes ctx first and gives up when it is done.
//   - Every create is idempotent by name: creating a resource that exists
//     with the same definition changes nothing; with a different definition
//     it updates it in place, as an ARM PUT does. Either way the resource
//     keeps the job tag of the job that first made it, so that cleaning up a
//     job never removes what another job built.
//   - Every delete is tolerant of absence: deleting what does not exist
//     returns nil. A delete refused because something still depends on the
//     resource returns an error wrapping ErrInUse.
//   - A create that names a parent that does not exist (a subnet's virtual
//     network, a connection's gateway) returns an error wrapping ErrNotFound
//     and creates nothing.
//   - List shows exactly what exists, each item with the job that made it.
//
// Implementations live below: local (processes on loopback addresses, no
// root), netlab (Linux network namespaces), azure. Retrying, throttling and
// logging are wrappers around these interfaces, not code inside them.
//
// It imports spec (its input types) and clock, and no implementation.
package provider
