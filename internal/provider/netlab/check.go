package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/provider"
)

// defaultProbeTimeout bounds a probe whose ctx has no deadline.
const defaultProbeTimeout = 5 * time.Second

// hostNamespace returns the namespace of a host a check or trace starts
// from: "onprem/host", "site/vm", or any other node of the lab.
func (p *Provider) hostNamespace(ctx context.Context, from string) (string, error) {
	if !strings.Contains(from, "/") {
		return "", fmt.Errorf("from %q: want site/vm or onprem/host: %w", from, provider.ErrInvalid)
	}
	ns, err := p.NodeNamespace(ctx, from)
	if err != nil {
		return "", fmt.Errorf("%s is neither a machine nor an on-premises host of the lab; create it first: %w", from, provider.ErrNotFound)
	}
	return ns, nil
}

// dialIn connects to addr from inside namespace ns.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNS(ns, func() error {
		var err error
		// One address, no resolver: the socket is made on this thread.
		conn, err = (&net.Dialer{FallbackDelay: -1}).DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Check runs one HTTP or TCP probe from inside the host's namespace: the
// packets take the lab's real path.
func (p *Provider) Check(ctx context.Context, c provider.Check) (provider.Result, error) {
	if (c.HTTP == "") == (c.TCP == "") {
		return provider.Result{}, fmt.Errorf("netlab: check from %s: give exactly one of http and tcp: %w", c.From, provider.ErrInvalid)
	}
	hostPort := c.TCP
	var u *url.URL
	if c.HTTP != "" {
		var err error
		u, err = url.Parse(c.HTTP)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return provider.Result{}, fmt.Errorf("netlab: check %q: want an http:// URL: %w", c.HTTP, provider.ErrInvalid)
		}
		hostPort = u.Host
		if u.Port() == "" {
			hostPort = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	if _, _, err := net.SplitHostPort(hostPort); err != nil {
		return provider.Result{}, fmt.Errorf("netlab: check %s: %v: %w", hostPort, err, provider.ErrInvalid)
	}
	ns, err := p.hostNamespace(ctx, c.From)
	if err != nil {
		return provider.Result{}, fmt.Errorf("netlab: check from %s: %w", c.From, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultProbeTimeout)
		defer cancel()
	}
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) { return dialIn(ctx, ns, "tcp4", addr) }
	if u == nil {
		return provider.ProbeTCP(ctx, p.opts.Clock, dial, hostPort), nil
	}
	res, err := provider.ProbeHTTP(ctx, p.opts.Clock, dial, c.HTTP, "")
	if err != nil {
		return provider.Result{}, fmt.Errorf("netlab: check %s: %w", c.HTTP, err)
	}
	return res, nil
}

// Exec runs argv inside a node's namespace (a machine, a host, an
// appliance, a gateway, a circuit or an on-premises router) with the given
// streams, and returns its exit status.
func (p *Provider) Exec(ctx context.Context, node string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(argv) == 0 {
		return 0, fmt.Errorf("netlab: exec in %s: no command given: %w", node, provider.ErrInvalid)
	}
	ns, err := p.NodeNamespace(ctx, node)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := inNS(ns, cmd.Start); err != nil {
		return 0, fmt.Errorf("netlab: exec in %s: %w", node, err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("netlab: exec in %s: %w", node, err)
	}
	return 0, nil
}

// Get fetches an http:// URL from inside a node's namespace and returns the
// body (at most 1 MiB): what a client there would read, through the lab's
// real path.
func (p *Provider) Get(ctx context.Context, from, rawURL string) ([]byte, error) {
	ns, err := p.hostNamespace(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("netlab: get from %s: %w", from, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("netlab: get %s: %w", rawURL, err)
	}
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialIn(ctx, ns, "tcp4", addr)
		},
	}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("netlab: get %s from %s: %w", rawURL, from, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("netlab: get %s from %s: %s", rawURL, from, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}
