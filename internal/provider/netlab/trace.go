package netlab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Hop is one probe of a trace: the TTL it was sent with, who answered and
// how.
type Hop struct {
	TTL     int    `json:"ttl"`
	Address string `json:"address,omitempty"`
	// Node names the answering address: "eastasia/hub-nva", "er-hongkong",
	// "hq" (the on-premises router), "eastasia/app1".
	Node string `json:"node,omitempty"`
	// Reply is time-exceeded, echo-reply, unreachable or none (no answer
	// within the timeout).
	Reply string  `json:"reply"`
	RTTms float64 `json:"rttMs,omitempty"`
}

// Trace is the real path of probes from a namespace to an address.
type Trace struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Result string `json:"result"` // delivered or dropped
	Reason string `json:"reason,omitempty"`
	Hops   []Hop  `json:"hops"`
}

// Nodes lists the nodes that answered, in order.
func (t *Trace) Nodes() []string {
	var out []string
	for _, h := range t.Hops {
		if h.Node != "" {
			out = append(out, h.Node)
		}
	}
	return out
}

// TraceOptions bound a trace.
type TraceOptions struct {
	MaxHops int           // default 16
	Timeout time.Duration // per probe; default 400ms
	// MaxSilent ends the trace after this many probes in a row get no
	// answer. Default 2.
	MaxSilent int
}

// Trace sends ICMP echo requests from the namespace of from with TTL 1, 2,
// ... to dst, and reads the time-exceeded, unreachable and echo answers,
// naming each answering address by the node that holds it.
func (p *Provider) Trace(ctx context.Context, from string, dst netip.Addr, o TraceOptions) (*Trace, error) {
	if o.MaxHops <= 0 {
		o.MaxHops = 16
	}
	if o.Timeout <= 0 {
		o.Timeout = 400 * time.Millisecond
	}
	if o.MaxSilent <= 0 {
		o.MaxSilent = 2
	}
	if !dst.Is4() {
		return nil, fmt.Errorf("netlab: trace to %s: want an IPv4 address", dst)
	}
	ns, err := p.hostNamespace(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("netlab: trace from %s: %w", from, err)
	}
	var nodes map[string]string
	if err := p.withState(ctx, false, func(st *state) error { nodes = st.Nodes; return nil }); err != nil {
		return nil, err
	}
	var fd int
	err = inNS(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: trace from %s: open a raw ICMP socket: %w", from, err)
	}
	defer unix.Close(fd)

	t := &Trace{From: from, To: dst.String(), Hops: []Hop{}}
	site, _, _ := strings.Cut(from, "/")
	id := uint16(rand.IntN(1 << 16))
	silent := 0
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	for ttl := 1; ttl <= o.MaxHops; ttl++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, ttl); err != nil {
			return nil, fmt.Errorf("netlab: trace: set TTL: %w", err)
		}
		start := p.opts.Clock.Now()
		if err := unix.Sendto(fd, echoRequest(id, uint16(ttl)), 0, to); err != nil {
			t.Result = "dropped"
			t.Reason = fmt.Sprintf("%s has no route to %s: %v", from, dst, err)
			return t, nil
		}
		h, ok, err := p.await(fd, id, uint16(ttl), dst, start, o.Timeout)
		if err != nil {
			return nil, fmt.Errorf("netlab: trace from %s: %w", from, err)
		}
		h.TTL = ttl
		if !ok {
			h.Reply = "none"
			t.Hops = append(t.Hops, h)
			silent++
			if silent >= o.MaxSilent {
				last := from
				if ns := t.Nodes(); len(ns) > 0 {
					last = ns[len(ns)-1]
				}
				t.Result = "dropped"
				t.Reason = fmt.Sprintf("no answer beyond %s", last)
				return t, nil
			}
			continue
		}
		silent = 0
		h.Node = pickNode(nodes[h.Address], site, h.Address)
		if s, _, ok := strings.Cut(h.Node, "/"); ok {
			site = s
		}
		t.Hops = append(t.Hops, h)
		switch h.Reply {
		case "echo-reply":
			t.Result = "delivered"
			t.Reason = "delivered to " + h.Node
			return t, nil
		case "unreachable":
			t.Result = "dropped"
			t.Reason = fmt.Sprintf("%s answered that %s is unreachable", h.Node, dst)
			return t, nil
		}
	}
	t.Result = "dropped"
	t.Reason = fmt.Sprintf("no echo reply within %d hops", o.MaxHops)
	return t, nil
}

// pickNode names an address. The same address can be held in two sites
// (a target that keeps the source's IPs); the one in the site the trace
// is in wins.
func pickNode(list, site, addr string) string {
	if list == "" {
		return addr
	}
	cands := strings.Split(list, ",")
	for _, c := range cands {
		if s, _, ok := strings.Cut(c, "/"); ok && s == site {
			return c
		}
	}
	return cands[0]
}

// await reads ICMP until the answer to probe (id, seq) arrives or the
// timeout passes.
func (p *Provider) await(fd int, id, seq uint16, dst netip.Addr, start time.Time, timeout time.Duration) (Hop, bool, error) {
	buf := make([]byte, 1500)
	for {
		left := timeout - p.opts.Clock.Since(start)
		if left <= 0 {
			return Hop{}, false, nil
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return Hop{}, false, fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			continue
		}
		n, _, err = unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return Hop{}, false, fmt.Errorf("read: %w", err)
		}
		src, reply, ok := parseAnswer(buf[:n], id, seq, dst)
		if !ok {
			continue
		}
		rtt := p.opts.Clock.Since(start)
		return Hop{Address: src.String(), Reply: reply, RTTms: float64(rtt.Microseconds()) / 1000}, true, nil
	}
}

// echoRequest builds an ICMP echo request.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8+16)
	b[0] = 8
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "standby netlab..")
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// parseAnswer reads an IPv4 packet holding ICMP and reports whether it
// answers probe (id, seq): an echo reply from dst, or a time-exceeded or
// unreachable message quoting the probe.
func parseAnswer(pkt []byte, id, seq uint16, dst netip.Addr) (netip.Addr, string, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return netip.Addr{}, "", false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 {
		return netip.Addr{}, "", false
	}
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	icmp := pkt[ihl:]
	switch icmp[0] {
	case 0:
		if binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) == seq && src == dst {
			return src, "echo-reply", true
		}
	case 3, 11:
		inner := icmp[8:]
		if len(inner) < 20 {
			return netip.Addr{}, "", false
		}
		iihl := int(inner[0]&0x0f) * 4
		if len(inner) < iihl+8 || netip.AddrFrom4([4]byte(inner[16:20])) != dst {
			return netip.Addr{}, "", false
		}
		q := inner[iihl:]
		if q[0] != 8 || binary.BigEndian.Uint16(q[4:]) != id || binary.BigEndian.Uint16(q[6:]) != seq {
			return netip.Addr{}, "", false
		}
		if icmp[0] == 11 {
			return src, "time-exceeded", true
		}
		return src, "unreachable", true
	}
	return netip.Addr{}, "", false
}
