package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/replication"
	"github.com/standby-dr/standby/internal/ship"
	"github.com/standby-dr/standby/internal/spec"
)

type replicaServeOpts struct {
	sources, mounts, replicas, tos []string
	every, appEvery                time.Duration
	rpoThreshold, retention        time.Duration
	threads                        int
	grain                          string
	name, status, stateDir         string
	quiescePre, quiescePost        string
	cert, key, ca                  string
	limitMbps                      float64
}

func newReplicaServeCmd(e *env) *cobra.Command {
	var o replicaServeOpts
	cmd := &cobra.Command{
		Use:   "serve --source FILE --mount PATH --replica DIR [--every 1s] [--to URL]",
		Short: "Serve a disk as a tracked file and replicate it continuously",
		Long: `Serves the disk image (or block device) FILE at PATH as a tracked file, through
FUSE: the VM's process uses PATH as its disk (it may loop-mount a filesystem
on it). Every write is seen, and recovery points are cut every --every (0:
continuous, each shipped batch is a point) into the replica in DIR, created on
first use, or at a receiver with --to. A cut holds writes for well under a
millisecond; what is shipped is exactly the disk at the cut.

Several --source/--mount/--replica triples (or --source/--mount/--to) form one
consistency group: every point is cut across all the disks at one instant.

PATH is a symbolic link to the file in a FUSE mount on a hidden directory
beside it. A restart after a crash resends only the regions the write-intent
log names (state resyncing); a clean stop resumes exactly. The state, RPO and
throughput are written each second to a status file that standby replica
watch reads. Runs until SIGINT or SIGTERM, then unmounts (waiting for the
disk's users to close it) and records a clean shutdown.`,
		Example: `  standby replica serve --source vm1-disk0.img --mount /run/vm1/disk0 --replica /srv/standby/vm1-disk0
  standby replica serve --source a.img --mount /run/vm1/a --replica /srv/r/a \
      --source b.img --mount /run/vm1/b --replica /srv/r/b --every 0s
  standby replica serve --source db.img --mount /run/db/disk --to https://dr.example:7443/db/disk0 \
      --tls-cert agent.pem --tls-key agent.key --ca ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaServe(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.sources, "source", nil, "backing disk: an image file or a block device (repeat for a consistency group)")
	f.StringArrayVar(&o.mounts, "mount", nil, "path the tracked disk is served at (one per --source)")
	f.StringArrayVar(&o.replicas, "replica", nil, "replica directory, created on first use (one per --source)")
	f.StringArrayVar(&o.tos, "to", nil, "ship to a receiver instead: https://HOST:PORT/VM/DISK, or tcp://127.0.0.1:PORT/... (one per --source)")
	f.DurationVar(&o.every, "every", time.Second, "crash-consistent point frequency; 0s: continuous")
	f.DurationVar(&o.appEvery, "app-every", 0, "app-consistent point frequency, with --quiesce-pre/--quiesce-post; 0: none")
	f.StringVar(&o.quiescePre, "quiesce-pre", "", "shell command run before an app-consistent cut")
	f.StringVar(&o.quiescePost, "quiesce-post", "", "shell command run after an app-consistent cut")
	f.DurationVar(&o.rpoThreshold, "rpo-threshold", 30*time.Minute, "RPO above which an alert is raised")
	f.DurationVar(&o.retention, "retention", replica.DefaultRetention.Window, "points older than this are removed (local replicas)")
	f.IntVar(&o.threads, "threads", replication.DefaultThreads, "parallel streams, 1-32")
	f.StringVar(&o.grain, "grain", "64KiB", "unit of write tracking, 4KiB-64KiB; also the block of a new replica")
	f.StringVar(&o.name, "name", "", "name of the VM (default: the first mount's base name)")
	f.StringVar(&o.status, "status", "", "status file for replica watch (default: hidden beside the first mount)")
	f.StringVar(&o.stateDir, "state-dir", "", "where the tracking state is kept (default: beside each source)")
	f.StringVar(&o.cert, "tls-cert", "", "with --to: client certificate (PEM)")
	f.StringVar(&o.key, "tls-key", "", "with --to: client private key (PEM)")
	f.StringVar(&o.ca, "ca", "", "with --to: CA certificate (PEM) of the receiver (default: the system's)")
	f.Float64Var(&o.limitMbps, "limit-mbps", 0, "with --to: bandwidth cap in Mbit/s for all streams (0: none)")
	return cmd
}

// serveStatusPath is the default status file of a serve whose first disk
// is served at mount.
func serveStatusPath(mount string) string {
	mount = filepath.Clean(mount)
	return filepath.Join(filepath.Dir(mount), ".standby-"+filepath.Base(mount)+".status.json")
}

// ServeStatus is what replica serve writes to its status file each second
// and replica watch reads.
type ServeStatus struct {
	replication.Status
	PID   int          `json:"pid"`
	Disks []ServedDisk `json:"served"`
}

// ServedDisk names one served disk.
type ServedDisk struct {
	Name    string `json:"name"`
	Source  string `json:"source"`
	Mount   string `json:"mount"`
	Replica string `json:"replica"`
}

func (o *replicaServeOpts) check() (grain int64, err error) {
	n := len(o.sources)
	switch {
	case n == 0:
		return 0, badInputf("--source FILE, --mount PATH and --replica DIR (or --to URL) are required")
	case len(o.mounts) != n:
		return 0, badInputf("%d --source and %d --mount: give one --mount per --source", n, len(o.mounts))
	case len(o.tos) > 0 && len(o.replicas) > 0:
		return 0, badInputf("--replica and --to exclude each other: the receiver keeps the replicas")
	case len(o.tos) == 0 && len(o.replicas) != n:
		return 0, badInputf("%d --source and %d --replica: give one --replica (or --to) per --source", n, len(o.replicas))
	case len(o.tos) > 0 && len(o.tos) != n:
		return 0, badInputf("%d --source and %d --to: give one --to per --source", n, len(o.tos))
	case o.every < 0 || o.appEvery < 0 || o.rpoThreshold < 0 || o.retention < 0:
		return 0, badInputf("--every, --app-every, --rpo-threshold and --retention cannot be negative")
	case o.threads < 1 || o.threads > replication.MaxThreads:
		return 0, badInputf("--threads %d: want 1 to %d", o.threads, replication.MaxThreads)
	case o.limitMbps < 0:
		return 0, badInputf("--limit-mbps %g: want 0 (no cap) or more", o.limitMbps)
	}
	grain, err = parseBlockSize(o.grain)
	if err != nil || grain > 64<<10 || grain&(grain-1) != 0 {
		return 0, badInputf("--grain %q: want a power of two from 4KiB to 64KiB", o.grain)
	}
	seen := map[string]bool{}
	for i, src := range o.sources {
		if _, err := os.Stat(src); err != nil {
			return 0, badInputf("--source %s: %v", src, err)
		}
		m := filepath.Clean(o.mounts[i])
		if seen[m] {
			return 0, badInputf("--mount %s is given twice", m)
		}
		seen[m] = true
		if fi, err := os.Lstat(m); err == nil {
			link, _ := os.Readlink(m)
			if fi.Mode()&os.ModeSymlink == 0 || filepath.Dir(link) != filepath.Base(capture.MountDir(m)) {
				return 0, badInputf("--mount %s exists and is not a disk served earlier: give a path that does not exist", m)
			}
		}
	}
	return grain, nil
}

func runReplicaServe(ctx context.Context, e *env, o replicaServeOpts) (err error) {
	grain, err := o.check()
	if err != nil {
		return err
	}
	clk := clock.Real{}
	if o.name == "" {
		o.name = filepath.Base(filepath.Clean(o.mounts[0]))
	}
	if o.status == "" {
		o.status = serveStatusPath(o.mounts[0])
	}
	// Everything opened is closed on the way out, in reverse.
	var undo []func()
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}()
	var limiter *ship.Limiter
	if len(o.tos) > 0 {
		limiter = ship.NewLimiter(ship.MbpsToBytes(o.limitMbps), clk)
	}
	vm := replication.VM{Name: o.name, Policy: spec.Policy{
		CrashConsistentFrequency: spec.Duration{Duration: o.every},
		AppConsistentFrequency:   spec.Duration{Duration: o.appEvery},
		RecoveryPointRetention:   spec.Duration{Duration: o.retention},
		UploadThreadsPerVM:       o.threads,
		RPOThreshold:             spec.Duration{Duration: o.rpoThreshold},
	}}
	if o.quiescePre != "" || o.quiescePost != "" {
		vm.Quiesce = &spec.Quiesce{}
		if o.quiescePre != "" {
			vm.Quiesce.Pre = []string{"sh", "-c", o.quiescePre}
		}
		if o.quiescePost != "" {
			vm.Quiesce.Post = []string{"sh", "-c", o.quiescePost}
		}
	}
	var served []ServedDisk
	var tracked []*capture.Tracked
	for i, src := range o.sources {
		size, err := capture.DiskSize(src)
		if err != nil {
			return badInput(err)
		}
		d := replication.Disk{Name: filepath.Base(filepath.Clean(o.mounts[i]))}
		sd := ServedDisk{Name: d.Name, Source: src, Mount: o.mounts[i]}
		if len(o.tos) > 0 {
			t, err := ship.ParseTarget(o.tos[i])
			if err != nil {
				return badInput(err)
			}
			sopts := ship.Options{Streams: o.threads, Size: size, BlockSize: grain, Clock: clk, Limiter: limiter}
			if t.TLS {
				if sopts.TLS, err = ship.ClientTLS(o.cert, o.key, o.ca); err != nil {
					return badInput(err)
				}
			} else if !ship.IsLoopback(t.Host) {
				return badInputf("--to %s: plain tcp:// is for a loopback receiver only: use https://", o.tos[i])
			}
			c, err := ship.Dial(ctx, o.tos[i], sopts)
			if err != nil {
				return err
			}
			undo = append(undo, func() { c.Close() })
			d.Target, sd.Replica = remoteTarget{c}, t.String()
		} else {
			r, _, err := openOrCreateReplica(o.replicas[i], size, grain, false, clk)
			if err != nil {
				return err
			}
			undo = append(undo, func() { r.Close() })
			d.Target, d.Pruner, sd.Replica = replication.Local(r), r, o.replicas[i]
		}
		info, err := d.Target.Info(ctx)
		if err != nil {
			return err
		}
		tr, err := capture.OpenTracked(src, capture.TrackedOptions{Grain: grain, BlockSize: info.BlockSize,
			StateDir: o.stateDir, Target: info.Name, Newest: info.Newest.Seq, Clock: clk})
		if err != nil {
			return err
		}
		d.Tracked = tr
		undo = append(undo, func() { tr.Close() }) // after a clean shutdown, a no-op
		tracked = append(tracked, tr)
		vm.Disks = append(vm.Disks, d)
		served = append(served, sd)
	}

	out := &serveOutput{e: e}
	g, err := replication.NewGroup(ctx, replication.GroupOptions{Name: o.name, VMs: []replication.VM{vm}, Clock: clk, Events: out.event})
	if err != nil {
		return err
	}
	var mounts []*capture.Mount
	unmountAll := func() error {
		var errs []error
		for _, m := range mounts {
			if err := m.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		mounts = nil
		return errors.Join(errs...)
	}
	undo = append(undo, func() { _ = unmountAll() })
	for i, tr := range tracked {
		m, err := capture.Serve(o.mounts[i], tr)
		if err != nil {
			return err
		}
		mounts = append(mounts, m)
	}

	writeStatus := func() error {
		st := ServeStatus{Status: g.Status(), PID: os.Getpid(), Disks: served}
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		tmp := o.status + ".tmp"
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write the status file %s: %w", o.status, err)
		}
		return os.Rename(tmp, o.status)
	}
	if err := writeStatus(); err != nil {
		return err
	}
	out.printf("serving %s (%d disk(s)), points every %s into %s; status in %s\n",
		o.name, len(tracked), durationOr(o.every, "batch (continuous)"), served[0].Replica, o.status)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case runErr = <-done:
			break loop
		case <-tick.C:
			if err := writeStatus(); err != nil {
				out.printf("%v\n", err)
			}
		}
	}
	// Stopped: no more points; the disks' users must let go before the
	// dirty maps are recorded.
	out.printf("stopping: unmounting %d disk(s) (waiting for their users to close them)\n", len(mounts))
	uerr := unmountAll()
	var serr error
	if uerr == nil {
		serr = g.ShutdownTracking()
	}
	_ = writeStatus()
	st := g.Status()
	out.printf("stopped after %d points; barrier pause p50 %.3f ms p99 %.3f ms\n", st.Points, st.BarrierMs.P50, st.BarrierMs.P99)
	return errors.Join(runErr, uerr, serr)
}

func durationOr(d time.Duration, zero string) string {
	if d == 0 {
		return zero
	}
	return d.String()
}

// serveOutput prints serve's events as they come: lines of text, or one
// JSON object per line.
type serveOutput struct {
	mu sync.Mutex
	e  *env
}

func (s *serveOutput) event(ev replication.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e.output == "json" {
		b, _ := json.Marshal(ev)
		fmt.Fprintf(s.e.stdout, "%s\n", b)
		return
	}
	where := ev.VM
	if ev.Disk != "" {
		where += "/" + ev.Disk
	}
	if where == "" {
		where = ev.Group
	}
	fmt.Fprintf(s.e.stdout, "%s %s %s: %s\n", ev.Time.Format("15:04:05.000"), where, ev.Kind, ev.Message)
}

func (s *serveOutput) printf(format string, args ...any) {
	if s.e.output == "json" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.e.stdout, format, args...)
}
