package provider

import (
	"context"
	"net"
	"net/http"

	"github.com/standby-dr/standby/internal/clock"
)

// Dial opens a connection where a check runs: on loopback for local, inside
// a namespace for netlab.
type Dial func(ctx context.Context, network, addr string) (net.Conn, error)

// ProbeTCP connects to addr through dial. A probe that ran and failed is a
// Result with OK false.
func ProbeTCP(ctx context.Context, clk clock.Clock, dial Dial, addr string) Result {
	start := clk.Now()
	res := Result{Target: addr}
	conn, err := dial(ctx, "tcp", addr)
	res.Elapsed = clk.Since(start)
	if err != nil {
		res.Detail = err.Error()
		return res
	}
	conn.Close()
	res.OK = true
	return res
}

// ProbeHTTP GETs url through dial and passes on a 2xx answer; redirects are
// not followed. host, when set, is the Host header: the address the check
// named, where the URL carries the address a provider rewrote it to. An
// error means the request could not be made at all.
func ProbeHTTP(ctx context.Context, clk clock.Clock, dial Dial, url, host string) (Result, error) {
	start := clk.Now()
	res := Result{Target: url}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Result{}, err
	}
	if host != "" {
		req.Host = host
	}
	client := &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil,
			DialContext:       dial,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	res.Elapsed = clk.Since(start)
	if err != nil {
		res.Detail = err.Error()
		return res, nil
	}
	resp.Body.Close()
	res.Status = resp.StatusCode
	res.OK = resp.StatusCode >= 200 && resp.StatusCode < 300
	res.Detail = resp.Status
	return res, nil
}
