package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/replication"
	"github.com/standby-dr/standby/internal/ship"
)

// syncToOpts are the flags of replica sync that ship to a receiver.
type syncToOpts struct {
	url       string
	cert      string
	key       string
	ca        string
	limitMbps float64
}

func addSyncToFlags(f *pflag.FlagSet, o *syncToOpts) {
	f.StringVar(&o.url, "to", "", "ship to a receiver instead of a local replica: https://HOST:PORT/VM/DISK (tcp://127.0.0.1:PORT/... for a plain loopback receiver)")
	f.StringVar(&o.cert, "tls-cert", "", "with --to: client certificate (PEM)")
	f.StringVar(&o.key, "tls-key", "", "with --to: client private key (PEM)")
	f.StringVar(&o.ca, "ca", "", "with --to: CA certificate (PEM) of the receiver (default: the system's)")
	f.Float64Var(&o.limitMbps, "limit-mbps", 0, "with --to: bandwidth cap in Mbit/s for all streams (0: none)")
}

// runReplicaSyncTo takes one point of o.source into the replica at a
// receiver: replication's loop, with ship as the target.
func runReplicaSyncTo(ctx context.Context, e *env, o replicaSyncOpts, to syncToOpts) error {
	if o.replica != "" {
		return badInputf("--replica and --to exclude each other: the receiver keeps the replica")
	}
	if o.source == "" {
		return badInputf("--source FILE is required")
	}
	if o.kind != replica.KindCrash && o.kind != replica.KindApp {
		return badInputf("--kind %q: want crash or app", o.kind)
	}
	if o.capture != "scan" {
		return badInputf("--capture %q: want scan", o.capture)
	}
	if o.threads < 1 || o.threads > ship.MaxStreams {
		return badInputf("--threads %d: want 1 to %d", o.threads, ship.MaxStreams)
	}
	if to.limitMbps < 0 {
		return badInputf("--limit-mbps %g: want 0 (no cap) or more", to.limitMbps)
	}
	target, err := ship.ParseTarget(to.url)
	if err != nil {
		return badInput(err)
	}
	bs, err := parseBlockSize(o.blockSize)
	if err != nil {
		return badInputf("--block-size %q: %v", o.blockSize, err)
	}
	size, err := capture.DiskSize(o.source)
	if err != nil {
		return badInput(err)
	}
	stateDir := o.stateDir
	if stateDir == "" && capture.IsBlockDevice(o.source) {
		if stateDir, err = defaultStateDir(); err != nil {
			return err
		}
	}
	clk := clock.Real{}
	opts := ship.Options{Streams: o.threads, Size: size, BlockSize: bs, Clock: clk,
		Limiter: ship.NewLimiter(ship.MbpsToBytes(to.limitMbps), clk)}
	if target.TLS {
		if opts.TLS, err = ship.ClientTLS(to.cert, to.key, to.ca); err != nil {
			return badInput(err)
		}
	} else if !ship.IsLoopback(target.Host) {
		return badInputf("--to %s: plain tcp:// is for a loopback receiver only: use https://", to.url)
	}
	c, err := ship.Dial(ctx, to.url, opts)
	if err != nil {
		return err
	}
	defer c.Close()

	bar := newReplicaBar(e)
	bar.start("sync to "+target.Path, size)
	ropts := replication.Options{
		Threads: o.threads, Kind: o.kind, StateDir: stateDir, Clock: clk,
		Progress: func(done, total int64) { bar.progress("sync", done, total) },
	}
	res, err := replication.Sync(ctx, o.source, remoteTarget{c}, ropts)
	bar.finish()
	if err != nil && res.Point.Seq == 0 {
		return err
	}
	out := ReplicaSyncTo{
		ReplicaSyncResult: ReplicaSyncResult{Seq: res.Point.Seq, Source: o.source, Replica: target.String(), Result: res},
		WireBytes:         c.Stats().WireBytes,
	}
	if info, ierr := c.Info(ctx); ierr == nil {
		out.Created = info.Created
	}
	if res.Seconds > 0 {
		out.MBPerSec = float64(res.Size) / res.Seconds / 1e6
		out.WireMbps = float64(out.WireBytes) * 8 / res.Seconds / 1e6
	}
	if rerr := e.render(out, func(w io.Writer) { printReplicaSyncTo(w, out) }); rerr != nil {
		return rerr
	}
	return err // the point is committed, but its hashes were not saved
}

// ReplicaSyncTo is the output of replica sync --to.
type ReplicaSyncTo struct {
	ReplicaSyncResult
	WireBytes int64   `json:"wireBytes"` // bytes sent on the network, compressed, TLS included
	WireMbps  float64 `json:"wireMbps"`  // of the whole sync, in Mbit/s
}

func printReplicaSyncTo(w io.Writer, r ReplicaSyncTo) {
	printReplicaSync(w, r.ReplicaSyncResult)
	fmt.Fprintf(w, "  network  %s sent, %.1f Mbit/s\n", byteSize(r.WireBytes), r.WireMbps)
}

// remoteTarget is a replica behind a receiver, as replication sees it.
type remoteTarget struct{ c *ship.Client }

func (t remoteTarget) Info(ctx context.Context) (replication.Info, error) {
	info, err := t.c.Info(ctx)
	if err != nil {
		return replication.Info{}, err
	}
	return replication.Info{Name: t.c.Target().String(), Size: info.Size, BlockSize: info.BlockSize, Newest: info.Newest}, nil
}

func (t remoteTarget) Begin(ctx context.Context) (replication.Txn, error) {
	txn, err := t.c.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return txn, nil
}
