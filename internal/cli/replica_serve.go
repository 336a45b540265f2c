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
		if !servedEarlierOrFree(m) {
			return 0, badInputf("--mount %s exists and is not a disk served earlier: give a path that does not exist", m)
		}
	}
	return grain, nil
}

// servedEarlierOrFree tells whether a disk can be served at path: nothing
// is there, or the link an earlier serve left.
func servedEarlierOrFree(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return true
	}
	link, _ := os.Readlink(path)
	return fi.Mode()&os.ModeSymlink != 0 && filepath.Dir(link) == filepath.Base(capture.MountDir(path))
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
	vm := vmToServe{vm: replication.VM{Name: o.name, Policy: spec.Policy{
		CrashConsistentFrequency: spec.Duration{Duration: o.every},
		AppConsistentFrequency:   spec.Duration{Duration: o.appEvery},
		RecoveryPointRetention:   spec.Duration{Duration: o.retention},
		UploadThreadsPerVM:       o.threads,
		RPOThreshold:             spec.Duration{Duration: o.rpoThreshold},
	}}}
	if len(o.tos) > 0 {
		vm.limiter = ship.NewLimiter(ship.MbpsToBytes(o.limitMbps), clk)
	}
	if o.quiescePre != "" || o.quiescePost != "" {
		vm.vm.Quiesce = &spec.Quiesce{}
		if o.quiescePre != "" {
			vm.vm.Quiesce.Pre = []string{"sh", "-c", o.quiescePre}
		}
		if o.quiescePost != "" {
			vm.vm.Quiesce.Post = []string{"sh", "-c", o.quiescePost}
		}
	}
	for i, src := range o.sources {
		d := diskToServe{source: src, mount: o.mounts[i]}
		if len(o.tos) > 0 {
			d.to = o.tos[i]
		} else {
			d.replica = o.replicas[i]
		}
		vm.disks = append(vm.disks, d)
	}
	out := &serveOutput{e: e}
	sg, err := openServeGroup(ctx, out, groupToServe{
		name: o.name, vms: []vmToServe{vm}, status: o.status, grain: grain, blockSize: grain,
		stateDir: o.stateDir, cert: o.cert, key: o.key, ca: o.ca,
	}, clk)
	if err != nil {
		return err
	}
	defer sg.close()
	out.printf("serving %s (%d disk(s)), points every %s into %s; status in %s\n",
		o.name, len(sg.served), durationOr(o.every, "batch (continuous)"), sg.served[0].Replica, o.status)
	return sg.run(ctx)
}

// groupToServe describes a consistency group to serve: the VMs whose disks
// are cut together, and where its status goes.
type groupToServe struct {
	name   string
	vms    []vmToServe
	status string // the status file replica watch reads
	grain  int64  // unit of write tracking
	// blockSize is the block of a replica created for a disk; a
	// multiple of the grain.
	blockSize     int64
	stateDir      string // of the tracking state; "": beside each source
	cert, key, ca string // client TLS for https:// receivers
}

// vmToServe is one VM of a groupToServe: the loop's VM (name, policy,
// quiesce; its disks are filled in when served) and its disks.
type vmToServe struct {
	vm      replication.VM
	disks   []diskToServe
	limiter *ship.Limiter // shared by the VM's streams to a receiver; may be nil
}

// diskToServe is one disk to serve: its backing file, the path it is served
// at, and where its points go: a local replica directory or a receiver's
// URL.
type diskToServe struct {
	source, mount string
	replica, to   string
}

// servedGroup is a groupToServe being served: its disks tracked and
// mounted, its loop ready to run.
type servedGroup struct {
	sg     groupToServe
	out    *serveOutput
	g      *replication.Group
	served []ServedDisk
	mounts []*capture.Mount
	undo   []func() // closes what was opened, in reverse
}

// openServeGroup opens each disk's target and tracking, prepares the loop,
// serves the disks at their mounts and writes the first status. On error
// everything opened is closed again.
func openServeGroup(ctx context.Context, out *serveOutput, sg groupToServe, clk clock.Clock) (_ *servedGroup, err error) {
	s := &servedGroup{sg: sg, out: out}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	var vms []replication.VM
	var tracked []*capture.Tracked
	var mounts []string
	for _, sv := range sg.vms {
		vm := sv.vm
		vm.Disks = nil
		for _, sd := range sv.disks {
			size, err := capture.DiskSize(sd.source)
			if err != nil {
				return nil, badInput(err)
			}
			d := replication.Disk{Name: filepath.Base(filepath.Clean(sd.mount))}
			served := ServedDisk{Name: d.Name, Source: sd.source, Mount: sd.mount}
			if sd.to != "" {
				t, err := ship.ParseTarget(sd.to)
				if err != nil {
					return nil, badInput(err)
				}
				sopts := ship.Options{Streams: vm.Policy.UploadThreadsPerVM, Size: size, BlockSize: sg.blockSize, Clock: clk, Limiter: sv.limiter}
				if t.TLS {
					if sopts.TLS, err = ship.ClientTLS(sg.cert, sg.key, sg.ca); err != nil {
						return nil, badInput(err)
					}
				} else if !ship.IsLoopback(t.Host) {
					return nil, badInputf("--to %s: plain tcp:// is for a loopback receiver only: use https://", sd.to)
				}
				c, err := ship.Dial(ctx, sd.to, sopts)
				if err != nil {
					return nil, err
				}
				s.undo = append(s.undo, func() { c.Close() })
				d.Target, served.Replica = remoteTarget{c}, t.String()
			} else {
				r, _, err := openOrCreateReplica(sd.replica, size, sg.blockSize, false, clk)
				if err != nil {
					return nil, err
				}
				s.undo = append(s.undo, func() { r.Close() })
				d.Target, d.Pruner, served.Replica = replication.Local(r), r, sd.replica
			}
			info, err := d.Target.Info(ctx)
			if err != nil {
				return nil, err
			}
			tr, err := capture.OpenTracked(sd.source, capture.TrackedOptions{Grain: sg.grain, BlockSize: info.BlockSize,
				StateDir: sg.stateDir, Target: info.Name, Newest: info.Newest.Seq, Clock: clk})
			if err != nil {
				return nil, err
			}
			d.Tracked = tr
			s.undo = append(s.undo, func() { tr.Close() }) // after a clean shutdown, a no-op
			tracked = append(tracked, tr)
			mounts = append(mounts, sd.mount)
			vm.Disks = append(vm.Disks, d)
			s.served = append(s.served, served)
		}
		vms = append(vms, vm)
	}

	s.g, err = replication.NewGroup(ctx, replication.GroupOptions{Name: sg.name, VMs: vms, Clock: clk, Events: out.event})
	if err != nil {
		return nil, err
	}
	s.undo = append(s.undo, func() { _ = s.unmountAll() })
	for i, tr := range tracked {
		m, err := capture.Serve(mounts[i], tr)
		if err != nil {
			return nil, err
		}
		s.mounts = append(s.mounts, m)
	}
	if err := s.writeStatus(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *servedGroup) unmountAll() error {
	var errs []error
	for _, m := range s.mounts {
		if err := m.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.mounts = nil
	return errors.Join(errs...)
}

// close closes everything opened, in reverse.
func (s *servedGroup) close() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		s.undo[i]()
	}
	s.undo = nil
}

func (s *servedGroup) writeStatus() error {
	st := ServeStatus{Status: s.g.Status(), PID: os.Getpid(), Disks: s.served}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.sg.status + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the status file %s: %w", s.sg.status, err)
	}
	return os.Rename(tmp, s.sg.status)
}

// run replicates until ctx is done, writing the status each second, then
// unmounts the disks (waiting for their users to close them) and records
// the tracking's clean shutdown.
func (s *servedGroup) run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.g.Run(runCtx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case runErr = <-done:
			break loop
		case <-tick.C:
			if err := s.writeStatus(); err != nil {
				s.out.printf("%v\n", err)
			}
		}
	}
	// Stopped: no more points; the disks' users must let go before the
	// dirty maps are recorded.
	s.out.printf("stopping: unmounting %d disk(s) (waiting for their users to close them)\n", len(s.mounts))
	uerr := s.unmountAll()
	var serr error
	if uerr == nil {
		serr = s.g.ShutdownTracking()
	}
	_ = s.writeStatus()
	st := s.g.Status()
	s.out.printf("stopped after %d points; barrier pause p50 %.3f ms p99 %.3f ms\n", st.Points, st.BarrierMs.P50, st.BarrierMs.P99)
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
