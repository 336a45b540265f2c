package netplan

import (
	"fmt"
	"net/netip"
)

// translator maps source prefixes and addresses to the other side: the
// identity for same addressing, else through from/to pairs (the longest
// `from` that covers the prefix wins).
type translator struct {
	same  bool
	pairs [][2]netip.Prefix
}

func (t *translator) prefix(p netip.Prefix) (netip.Prefix, error) {
	if t.same {
		return p, nil
	}
	best := -1
	for i, pr := range t.pairs {
		if pr[0].Bits() <= p.Bits() && pr[0].Contains(p.Addr()) && (best < 0 || pr[0].Bits() > t.pairs[best][0].Bits()) {
			best = i
		}
	}
	if best < 0 {
		return netip.Prefix{}, fmt.Errorf("no addressTranslation covers %s", p)
	}
	a := shift(p.Addr(), t.pairs[best][0].Addr(), t.pairs[best][1].Addr())
	return netip.PrefixFrom(a, p.Bits()), nil
}

func (t *translator) addr(a netip.Addr) (netip.Addr, error) {
	p, err := t.prefix(netip.PrefixFrom(a, a.BitLen()))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no addressTranslation covers %s", a)
	}
	return p.Addr(), nil
}

// covers reports whether p is translated (false for prefixes outside every
// `from`, such as 0.0.0.0/0 or on-premises ranges, which stay as they are).
func (t *translator) covers(p netip.Prefix) bool {
	if t.same {
		return true
	}
	_, err := t.prefix(p)
	return err == nil
}

// shift moves a from base `from` to base `to` keeping its offset.
func shift(a, from, to netip.Addr) netip.Addr {
	ab, fb, tb := a.As16(), from.As16(), to.As16()
	var out [16]byte
	borrow := 0
	var off [16]byte
	for i := 15; i >= 0; i-- {
		d := int(ab[i]) - int(fb[i]) - borrow
		borrow = 0
		if d < 0 {
			d += 256
			borrow = 1
		}
		off[i] = byte(d)
	}
	carry := 0
	for i := 15; i >= 0; i-- {
		s := int(tb[i]) + int(off[i]) + carry
		out[i] = byte(s)
		carry = s >> 8
	}
	r := netip.AddrFrom16(out)
	if a.Is4() {
		return r.Unmap()
	}
	return r
}

// carver hands out aligned blocks of a pool, in order.
type carver struct {
	pool netip.Prefix
	next netip.Addr
	done bool
}

func newCarver(pool netip.Prefix) *carver { return &carver{pool: pool, next: pool.Addr()} }

func (c *carver) take(bits int) (netip.Prefix, error) {
	if !c.pool.IsValid() {
		return netip.Prefix{}, fmt.Errorf("no testNetwork.addressPool is set")
	}
	if bits < c.pool.Bits() {
		return netip.Prefix{}, fmt.Errorf("a /%d does not fit in the test pool %s", bits, c.pool)
	}
	for !c.done {
		p := netip.PrefixFrom(c.next, bits).Masked()
		if p.Addr() != c.next {
			// Align up to the next /bits boundary.
			c.next = lastAddr(p).Next()
			continue
		}
		if !c.pool.Contains(p.Addr()) || !c.pool.Contains(lastAddr(p)) {
			break
		}
		n := lastAddr(p).Next()
		if !n.IsValid() || !c.pool.Contains(n) {
			c.done = true
		} else {
			c.next = n
		}
		return p, nil
	}
	return netip.Prefix{}, fmt.Errorf("the test pool %s is exhausted; give a larger testNetwork.addressPool", c.pool)
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	host := 128 - p.Bits()
	if p.Addr().Is4() {
		host = 32 - p.Bits()
	}
	for i := 15; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	r := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return r.Unmap()
	}
	return r
}
