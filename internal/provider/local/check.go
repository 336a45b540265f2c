package local

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/provider"
)

// defaultProbeTimeout bounds a probe whose ctx has no deadline.
const defaultProbeTimeout = 10 * time.Second

// Check runs one HTTP or TCP probe from a host. The address in the check is
// the spec's; it is rewritten to the loopback address of the running
// machine that holds it: at the checking machine's own site first, else at
// the one site where it is active (preferring, from on-premises, a site with
// a circuit connection when several are).
func (p *Provider) Check(ctx context.Context, c provider.Check) (provider.Result, error) {
	if (c.HTTP == "") == (c.TCP == "") {
		return provider.Result{}, fmt.Errorf("local: check from %s: give exactly one of http and tcp: %w", c.From, provider.ErrInvalid)
	}
	hostPort := c.TCP
	var u *url.URL
	if c.HTTP != "" {
		var err error
		u, err = url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return provider.Result{}, fmt.Errorf("local: check %q: want an http:// URL: %w", c.HTTP, provider.ErrInvalid)
		}
		hostPort = u.Host
		if u.Port() == "" {
			hostPort = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
		}
	}
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return provider.Result{}, fmt.Errorf("local: check %s: %v: %w", hostPort, err, provider.ErrInvalid)
	}
	p.mu.Lock()
	target, detail, err := p.resolve(c.From, host)
	p.mu.Unlock()
	if err != nil {
		return provider.Result{}, fmt.Errorf("local: check from %s: %w", c.From, err)
	}
	if detail != "" {
		return provider.Result{Target: hostPort, Detail: detail}, nil
	}
	addr := net.JoinHostPort(target, port)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultProbeTimeout)
		defer cancel()
	}
	dial := (&net.Dialer{}).DialContext
	if u == nil {
		return provider.ProbeTCP(ctx, p.opts.Clock, dial, addr), nil
	}
	ru := *u
	ru.Host = addr
	// The service sees the address it was asked for.
	res, err := provider.ProbeHTTP(ctx, p.opts.Clock, dial, ru.String(), u.Host)
	if err != nil {
		return provider.Result{}, fmt.Errorf("local: check %s: %w", c.HTTP, err)
	}
	return res, nil
}

// resolve finds where host, as seen from from, is on this machine: a
// loopback address, or a detail saying why no machine answers there. The
// caller holds mu.
func (p *Provider) resolve(from, host string) (target, detail string, err error) {
	fromSite, fromName, ok := strings.Cut(from, "/")
	if !ok || fromSite == "" || fromName == "" {
		return "", "", fmt.Errorf("from %q: want site/vm or onprem/host: %w", from, provider.ErrInvalid)
	}
	fromVM := false
	if m, ok := p.vms[provider.Ref{Site: fromSite, Kind: provider.KindVM, Name: fromName}]; ok && m.state() == "running" {
		fromVM = true
	} else if !p.has(fromSite, provider.KindHost, fromName) {
		return "", "", fmt.Errorf("%s is neither a running machine nor an on-premises host; create the host first: %w", from, provider.ErrNotFound)
	}
	if host == "localhost" {
		return "127.0.0.1", "", nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", "", fmt.Errorf("target %q: want an IP address, as in the spec: %w", host, provider.ErrInvalid)
	}
	if ip.IsLoopback() {
		return ip.String(), "", nil
	}
	sites := map[string]netip.Addr{}
	for _, m := range p.vms {
		if m.state() != "running" {
			continue
		}
		for i, a := range m.IPs {
			if a == ip && i < len(m.Loopback) {
				sites[m.Site] = m.Loopback[i]
			}
		}
	}
	if a, ok := sites[fromSite]; ok && fromVM {
		return a.String(), "", nil
	}
	if len(sites) > 1 {
		connected := map[string]netip.Addr{}
		for s, a := range sites {
			for r := range p.res {
				if r.Site == s && r.Kind == provider.KindConnection {
					connected[s] = a
				}
			}
		}
		if len(connected) == 1 {
			sites = connected
		}
	}
	switch len(sites) {
	case 0:
		return "", fmt.Sprintf("no running machine holds %s", ip), nil
	case 1:
		for _, a := range sites {
			return a.String(), "", nil
		}
	}
	names := slices.Sorted(maps.Keys(sites))
	return "", "", fmt.Errorf("%s is active at %s at once, and %s cannot tell which it reaches; stop one side first: %w",
		ip, strings.Join(names, " and "), from, provider.ErrConflict)
}
