package spec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Prefix is a CIDR prefix parsed strictly: no host bits, no IPv4-mapped
// IPv6 forms, no zones.
type Prefix struct{ netip.Prefix }

// ParsePrefix parses s strictly.
func ParsePrefix(s string) (Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return Prefix{}, fmt.Errorf("%q is not a CIDR prefix (want a.b.c.d/n with n from 0 to 32)", s)
	}
	if p.Addr().Is4In6() {
		return Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix; write the IPv4 form", s)
	}
	if p.Masked() != p {
		return Prefix{}, fmt.Errorf("%q has host bits set; the network is %s", s, p.Masked())
	}
	return Prefix{p}, nil
}

// MustPrefix parses s or panics; for tests and tables.
func MustPrefix(s string) Prefix {
	p, err := ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Prefix) UnmarshalText(b []byte) error {
	v, err := ParsePrefix(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (p Prefix) MarshalText() ([]byte, error) {
	if !p.IsValid() {
		return []byte{}, nil
	}
	return []byte(p.String()), nil
}

// IsZero reports whether the prefix is unset.
func (p Prefix) IsZero() bool { return !p.IsValid() }

// Addr is an IP address parsed strictly.
type Addr struct{ netip.Addr }

// ParseAddr parses s strictly.
func ParseAddr(s string) (Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Is4In6() {
		return Addr{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address; write the IPv4 form", s)
	}
	if a.Zone() != "" {
		return Addr{}, fmt.Errorf("%q has a zone; zones are not allowed", s)
	}
	return Addr{a}, nil
}

// MustAddr parses s or panics; for tests and tables.
func MustAddr(s string) Addr {
	a, err := ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Addr) UnmarshalText(b []byte) error {
	v, err := ParseAddr(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (a Addr) MarshalText() ([]byte, error) {
	if !a.IsValid() {
		return []byte{}, nil
	}
	return []byte(a.String()), nil
}

// IsZero reports whether the address is unset.
func (a Addr) IsZero() bool { return !a.IsValid() }

// Duration is a time.Duration written with units (30s, 5m, 24h, 7d).
type Duration struct{ time.Duration }

// ParseDuration parses s: Go's units plus d for days; a bare 0 is zero.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return Duration{}, nil
	}
	if strings.HasSuffix(s, "d") {
		n, err := strconv.ParseFloat(strings.TrimSuffix(s, "d"), 64)
		if err != nil || n < 0 || n > 3650 {
			return Duration{}, fmt.Errorf("%q is not a duration (write 30s, 5m, 24h or 7d)", s)
		}
		return Duration{time.Duration(n * float64(24*time.Hour))}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return Duration{}, fmt.Errorf("%q is not a duration (write 30s, 5m, 24h or 7d)", s)
	}
	if d < 0 {
		return Duration{}, fmt.Errorf("%q is negative", s)
	}
	return Duration{d}, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Size is a byte count written with units (512MiB, 4GiB, 4096).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// ParseSize parses s: a whole number with an optional unit.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult = u.mult
			num = strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (write 4096, 512MiB or 4GiB)", s)
	}
	if n > 0 && mult > (1<<62)/n {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n * mult), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (z *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// String writes the size with the largest binary unit that divides it.
func (z Size) String() string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(z) >= u.m && int64(z)%u.m == 0 {
			return strconv.FormatInt(int64(z)/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(int64(z), 10)
}

// MarshalText implements encoding.TextMarshaler.
func (z Size) MarshalText() ([]byte, error) { return []byte(z.String()), nil }
