package ship

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
)

// Target is a parsed receiver URL: https://HOST:PORT/VM/DISK for TLS, or
// tcp://HOST:PORT/VM/DISK for the plain mode, which is for loopback only.
type Target struct {
	TLS  bool
	Addr string // host:port
	Host string
	Path string // vm/disk, cleaned, without leading slash
}

func (t Target) String() string {
	scheme := "tcp"
	if t.TLS {
		scheme = "https"
	}
	return scheme + "://" + t.Addr + "/" + t.Path
}

var segmentRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ParseTarget reads a receiver URL.
func ParseTarget(raw string) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, fmt.Errorf("ship: receiver URL %q: %w", raw, err)
	}
	var t Target
	switch u.Scheme {
	case "https":
		t.TLS = true
	case "tcp", "http":
	default:
		return Target{}, fmt.Errorf("ship: receiver URL %q: scheme %q: want https:// (TLS) or tcp:// (plain, loopback only)", raw, u.Scheme)
	}
	if u.Port() == "" || u.Hostname() == "" {
		return Target{}, fmt.Errorf("ship: receiver URL %q: want HOST:PORT, as in https://dr.example:7443/vm1/data", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Target{}, fmt.Errorf("ship: receiver URL %q: no user, query or fragment allowed", raw)
	}
	t.Addr, t.Host = u.Host, u.Hostname()
	p, err := CleanPath(u.Path)
	if err != nil {
		return Target{}, fmt.Errorf("ship: receiver URL %q: %w", raw, err)
	}
	t.Path = p
	return t, nil
}

// CleanPath checks a replica's name: one to four segments of letters,
// digits, dot, dash and underscore (vm/disk), none of them . or ..
func CleanPath(p string) (string, error) {
	p = strings.Trim(p, "/")
	segs := strings.Split(p, "/")
	if p == "" || len(segs) > 4 {
		return "", errors.New("the path names the replica as VM/DISK, as in /vm1/data")
	}
	for _, s := range segs {
		if !segmentRE.MatchString(s) || s == "." || s == ".." {
			return "", fmt.Errorf("path segment %q: want letters, digits, '.', '-' or '_', not starting with a dot", s)
		}
	}
	return path.Join(segs...), nil
}

// IsLoopback reports whether host (a name or an address, with or without a
// port) is this machine's loopback.
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// ServerTLS is the receiver's TLS 1.3 configuration: its certificate, and
// the CA that client certificates must chain to (required).
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("ship: load the receiver certificate %s and key %s: %w", certFile, keyFile, err)
	}
	pool, err := loadPool(clientCAFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS is the sender's TLS 1.3 configuration: its client certificate
// (certFile and keyFile may be empty only to be refused) and the CA of the
// receiver's certificate (empty: the system's roots).
func ClientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("ship: load the client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ship: read the CA certificates %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ship: %s holds no PEM certificate: give the CA certificate in PEM", file)
	}
	return pool, nil
}
