package local

import (
	"net/netip"
	"testing"
)

func TestLoopbackAllocation(t *testing.T) {
	p, err := New(Options{Dir: t.TempDir(), Lab: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a := siteIP{Site: "eastasia", Key: "10.1.0.4"}
	b := siteIP{Site: "southeastasia", Key: "10.1.0.4"}
	la, _ := p.loopbackFor(a)
	lb, _ := p.loopbackFor(b)
	if la == lb || !la.IsLoopback() || !lb.IsLoopback() {
		t.Fatalf("same IP at two sites: %s and %s", la, lb)
	}
	if again, _ := p.loopbackFor(a); again != la {
		t.Fatalf("allocation moved: %s then %s", la, again)
	}
	// Force a collision: the address b would get is taken by someone else.
	p.release(b)
	first := hashLoopback("lab", b.Site, b.Key, 0)
	p.taken[first] = siteIP{Site: "other", Key: "x"}
	lb2, _ := p.loopbackFor(b)
	if lb2 == first || lb2 == la || !lb2.IsLoopback() {
		t.Fatalf("collision not avoided: got %s, taken %s", lb2, first)
	}
	// No address near 127.0.0.1, nor a .0 or .255.
	for i := range 5000 {
		a := hashLoopback("lab", "s", netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String(), 0)
		if !a.IsValid() {
			continue
		}
		b := a.As4()
		if b[0] != 127 || b[1] == 0 || b[3] == 0 || b[3] == 255 {
			t.Fatalf("bad address %s", a)
		}
	}
}
