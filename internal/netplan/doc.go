// Package netplan is the pure network model of a DR setup: from a spec it
// builds each site's networks, runs the rules of network-rules.md returning
// findings, derives the failover topology, generates the recovery site's
// networks and the two-way map, writes the runbook, and traces packets in
// the source, target, test and failover states.
//
// It does no I/O and imports nothing internal but spec (its input types).
// Findings, plans and traces are data; the CLI and the API render them.
//
// Peering semantics: on a peering from A to B, allowVirtualNetworkAccess
// lets A reach B's space, allowForwardedTraffic lets A accept traffic that B
// forwards (traffic whose source is not in B's own space), allowGatewayTransit
// lets B use A's gateway, useRemoteGateways makes A use B's gateway.
package netplan
