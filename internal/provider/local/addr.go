package local

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
)

// loopbackFor returns the loopback address of ip at site, allocating one if
// needed; the caller holds mu. The address comes from a hash of the lab, the
// site, the IP and an attempt counter; an address already given to another
// site and IP, or one in 127.0.0.0/16 (where 127.0.0.1 lives), is passed
// over for the next attempt. Allocations are kept in the state file, so an
// address does not move while it is in use.
func (p *Provider) loopbackFor(key siteIP) (netip.Addr, error) {
	if a, ok := p.addrs[key]; ok {
		return a, nil
	}
	for attempt := 0; attempt < 1000; attempt++ {
		a := hashLoopback(p.opts.Lab, key.Site, key.Key, attempt)
		if a == (netip.Addr{}) {
			continue
		}
		if _, used := p.taken[a]; used {
			continue
		}
		p.addrs[key] = a
		p.taken[a] = key
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("no free loopback address for %s at %s", key.Key, key.Site)
}

// release gives back the loopback address of key; the caller holds mu.
func (p *Provider) release(key siteIP) {
	if a, ok := p.addrs[key]; ok {
		delete(p.taken, a)
		delete(p.addrs, key)
	}
}

// hashLoopback is attempt number attempt at an address for key at site; the
// zero Addr when the hash lands where no machine should be.
func hashLoopback(lab, site, key string, attempt int) netip.Addr {
	h := fnv.New64a()
	for _, s := range []string{lab, site, key, strconv.Itoa(attempt)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	v := h.Sum64()
	x, y, z := byte(v>>16), byte(v>>8), byte(v)
	if x == 0 || z == 0 || z == 255 {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte{127, x, y, z})
}
