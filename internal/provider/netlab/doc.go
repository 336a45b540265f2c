// Package netlab is the provider that builds a spec's sites as real
// networks of Linux network namespaces (root), where packets flow the way
// Azure routes them: the decision is made at the sending NIC and the packet
// goes straight to the next hop's NIC, whatever VNet it is in.
//
// Layout. Each site is one fabric namespace holding a bridge. Every VM, NIC,
// appliance and gateway is its own namespace whose eth0 is a veth to the
// fabric, its address a /32, forwarding on for appliances and gateways,
// redirects off, no reverse-path filter. Each holds its subnet's effective
// routes as netplan computes them (netplan.NewRouting), with on-link next
// hops: VnetLocal and VNetPeering on eth0, VirtualAppliance and
// VirtualNetworkGateway via the appliance's or gateway's address, onlink;
// None a blackhole; Internet unreachable (nothing leaves the lab). A
// gateway's fabric address is the fourth of its GatewaySubnet (the first
// Azure hands out). nftables bridge rules in the fabric let frames pass
// only within a VNet or across a connected peering that allows access, and
// forwarded traffic only where the receiving side's peering allows it, or
// as gateway transit into a spoke that uses the hub's gateway.
//
// Circuits. A gateway links to a namespace per circuit (one per
// connection), and each circuit to the router namespace of its
// on-premises site, on 169.254.0.0/16 /30s. On-premises hosts sit on a
// bridge in the router. The circuit routes on-premises prefixes to the
// router and each connection's advertised prefixes (netplan.Advertised) to
// its gateway; the router learns every connected hub's prefixes, a source
// site's connection before a target's (metric), or the connections of the
// site Prefer names first (kept in the state). Connecting a hub whose
// prefixes overlap another connection's on the same circuit fails with
// rule ER-04, unless Options.Force: then both are installed as multipath
// and packets are lost. tc shapes each circuit link to its bandwidth with
// netem (delay and rate); a kernel without netem gets tbf, the rate alone.
//
// State. The lab's resources, machines, links and the address-to-node map
// live in a JSON file in the lab directory, changed under a file lock, so
// that status, exec, trace and down work from other processes. After each
// change the lab is reconciled: namespaces and links added or removed, and
// the routes (ip -batch) or fabric rules (nft -f) of every namespace whose
// set changed replaced at once. Everything is named with Prefix(lab); Down
// removes it by prefix, with or without a state file.
//
// Machines run their boot command inside their namespace in their own
// session; checks and traces open their sockets inside the source
// namespace (a locked OS thread that enters it and leaves it). Traces send
// TTL-limited ICMP echoes and read the time-exceeded answers.
//
// Departures from the design, and why: peerings across sites are refused
// (each site is its own fabric); a machine's routes are those of its first
// NIC's subnet (other NICs hold their address only); the netlink work is
// done with iproute2, nft and tc rather than a netlink library, so that
// what the lab does can be replayed by hand.
//
// It imports provider, spec, netplan and clock; nothing imports it but cli
// and tests.
package netlab
