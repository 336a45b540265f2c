package netlab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// reconcile makes the namespaces, links, routes and fabric rules of the
// lab what its resources and machines say: it removes what is no longer
// wanted, builds what is missing, and replaces the routes (or rules) of
// every namespace whose set changed. The caller holds the lab lock and
// saves st afterwards, also after an error, so that st records what was
// built.
func (p *Provider) reconcile(ctx context.Context, st *state) error {
	L := p.layout(st)

	// Namespaces no longer wanted go first, with what runs in them.
	present, err := listNamespaces(p.prefix)
	if err != nil {
		return fmt.Errorf("netlab: list namespaces: %w", err)
	}
	exists := map[string]bool{}
	for _, ns := range present {
		if L.ns[ns] != nil {
			exists[ns] = true
			continue
		}
		if err := deleteNamespace(ctx, ns); err != nil {
			return fmt.Errorf("netlab: %w", err)
		}
		p.forgetNS(st, ns)
	}
	for ns := range st.Namespaces {
		if !exists[ns] {
			p.forgetNS(st, ns)
		}
	}

	// Missing namespaces.
	for _, name := range slices.Sorted(maps.Keys(L.ns)) {
		n := L.ns[name]
		if !exists[name] {
			if err := p.createNS(ctx, n); err != nil {
				return fmt.Errorf("netlab: build %s (%s): %w", n.Node, name, err)
			}
		}
		st.Namespaces[name] = n.Node
	}

	// Links.
	for key, rec := range st.Links {
		if l := L.links[key]; l == nil || l.hash() != rec.Hash {
			_ = ipBatch(ctx, rec.A, []string{"link del " + rec.AIf})
			delete(st.Links, key)
			delete(st.Applied, "routes:"+rec.A)
			delete(st.Applied, "routes:"+rec.B)
		}
	}
	for key := range st.Slots {
		if L.links[key] == nil {
			delete(st.Slots, key)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(L.links)) {
		l := L.links[key]
		if _, ok := st.Links[key]; ok {
			continue
		}
		if err := p.createLink(ctx, l); err != nil {
			return fmt.Errorf("netlab: link %s: %w", key, err)
		}
		st.Links[key] = linkRec{A: l.A.NS, B: l.B.NS, Hash: l.hash(), AIf: l.A.If}
		delete(st.Applied, "routes:"+l.A.NS)
		delete(st.Applied, "routes:"+l.B.NS)
	}

	// Routes and rules.
	for _, name := range slices.Sorted(maps.Keys(L.ns)) {
		n := L.ns[name]
		if h := digest(n.Routes); st.Applied["routes:"+name] != h {
			// A flush races with the kernel dropping routes of a link just
			// removed; what it could not delete is gone anyway.
			_ = ipBatch(ctx, name, []string{"route flush proto static"})
			if err := ipBatch(ctx, name, n.Routes); err != nil {
				delete(st.Applied, "routes:"+name)
				return fmt.Errorf("netlab: routes of %s: %w", n.Node, err)
			}
			st.Applied["routes:"+name] = h
		}
		if n.Kind != kindFabric {
			continue
		}
		if h := digest([]string{n.Rules}); st.Applied["rules:"+name] != h {
			if _, err := runIn(ctx, name, n.Rules, "nft", "-f", "-"); err != nil {
				delete(st.Applied, "rules:"+name)
				return fmt.Errorf("netlab: fabric rules of %s: %w", n.Node, err)
			}
			st.Applied["rules:"+name] = h
		}
	}
	st.Nodes = map[string]string{}
	for a, nodes := range L.nodes {
		st.Nodes[a] = strings.Join(nodes, ",")
	}
	return nil
}

// forgetNS drops what st records of a namespace that is gone.
func (p *Provider) forgetNS(st *state, ns string) {
	delete(st.Namespaces, ns)
	delete(st.Applied, "routes:"+ns)
	delete(st.Applied, "rules:"+ns)
	for key, rec := range st.Links {
		if rec.A == ns || rec.B == ns {
			delete(st.Links, key)
			other := rec.A
			if other == ns {
				other = rec.B
			}
			delete(st.Applied, "routes:"+other)
		}
	}
}

func digest(lines []string) string {
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:8])
}

// createNS builds an empty node namespace: loopback up, no IPv6, no
// redirects, no reverse-path filter, ICMP errors unlimited and sent from
// the interface the packet came in on, forwarding as the node needs.
func (p *Provider) createNS(ctx context.Context, n *nodeNS) error {
	if _, err := runIn(ctx, "", "", "ip", "netns", "add", n.Name); err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, n.Name)); serr != nil {
			return err
		}
	}
	fwd := "0"
	if n.Forward {
		fwd = "1"
	}
	// ip_forward first: writing it resets accept_redirects.
	kv := [][2]string{{"net.ipv4.ip_forward", fwd}}
	for _, c := range []string{"all", "default"} {
		kv = append(kv,
			[2]string{"net.ipv4.conf." + c + ".rp_filter", "0"},
			[2]string{"net.ipv4.conf." + c + ".send_redirects", "0"},
			[2]string{"net.ipv4.conf." + c + ".accept_redirects", "0"},
			[2]string{"net.ipv6.conf." + c + ".disable_ipv6", "1"})
	}
	kv = append(kv, [2]string{"net.ipv4.icmp_ratelimit", "0"}, [2]string{"net.ipv4.icmp_errors_use_inbound_ifaddr", "1"})
	if err := sysctls(n.Name, kv); err != nil {
		return err
	}
	lines := []string{"link set lo up"}
	if n.Bridge {
		lines = append(lines, "link add br0 type bridge", "link set br0 up")
		if n.BridgeAddr.IsValid() {
			lines = append(lines, "addr add "+n.BridgeAddr.String()+"/32 dev br0")
		}
	}
	return ipBatch(ctx, n.Name, lines)
}

// createLink builds a veth pair between two namespaces, addresses and
// enslaves its ends, and shapes it when it is a circuit.
func (p *Provider) createLink(ctx context.Context, l *link) error {
	add := fmt.Sprintf("link add %s type veth peer name %s netns %s", l.A.If, l.B.If, l.B.NS)
	if err := ipBatch(ctx, l.A.NS, []string{add}); err != nil {
		if !strings.Contains(err.Error(), "exists") {
			return err
		}
		// Left by a crash: rebuild it.
		_ = ipBatch(ctx, l.A.NS, []string{"link del " + l.A.If})
		_ = ipBatch(ctx, l.B.NS, []string{"link del " + l.B.If})
		if err := ipBatch(ctx, l.A.NS, []string{add}); err != nil {
			return err
		}
	}
	for _, e := range []endpoint{l.A, l.B} {
		var lines []string
		if e.Addr.IsValid() {
			lines = append(lines, fmt.Sprintf("addr add %s dev %s", e.Addr, e.If))
		}
		if e.Master != "" {
			lines = append(lines, fmt.Sprintf("link set %s master %s", e.If, e.Master))
		}
		// A stable address: a machine whose namespace is made again (stopped,
		// then started) keeps its MAC, so its neighbours' caches stay right
		// instead of sending to the old one until they time out.
		lines = append(lines, fmt.Sprintf("link set %s address %s", e.If, stableMAC(e.NS, e.If)))
		lines = append(lines, fmt.Sprintf("link set %s up", e.If))
		if err := ipBatch(ctx, e.NS, lines); err != nil {
			return err
		}
		if l.RateMbps > 0 {
			if err := p.shape(ctx, e, l); err != nil {
				return err
			}
		}
	}
	return nil
}

// shape limits a circuit link's end to the circuit's bandwidth with its
// delay (netem); a kernel without netem gets the rate alone (tbf).
func (p *Provider) shape(ctx context.Context, e endpoint, l *link) error {
	delay := fmt.Sprintf("%dus", l.Delay.Microseconds())
	rate := fmt.Sprintf("%dmbit", l.RateMbps)
	_, err := runIn(ctx, e.NS, "", "tc", "qdisc", "replace", "dev", e.If, "root", "netem", "delay", delay, "rate", rate, "limit", "10000")
	if err == nil {
		return nil
	}
	burst := max(l.RateMbps*1_000_000/8/100, 16*1024)
	_, terr := runIn(ctx, e.NS, "", "tc", "qdisc", "replace", "dev", e.If, "root", "tbf", "rate", rate, "burst", fmt.Sprint(burst), "latency", "50ms")
	if terr != nil {
		return errors.Join(err, terr)
	}
	return nil
}

// stableMAC derives a locally administered unicast MAC from a namespace
// and an interface name.
func stableMAC(ns, ifname string) string {
	sum := sha256.Sum256([]byte(ns + "/" + ifname))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", sum[0], sum[1], sum[2], sum[3], sum[4])
}
