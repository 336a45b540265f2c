package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/replication"
)

type replicaSyncOpts struct {
	source    string
	replica   string
	threads   int
	capture   string
	blockSize string
	stateDir  string
	kind      string
	bsGiven   bool // --block-size was given
}

func newReplicaSyncCmd(e *env) *cobra.Command {
	var o replicaSyncOpts
	var to syncToOpts
	cmd := &cobra.Command{
		Use:   "sync --source FILE --replica DIR",
		Short: "Take one recovery point of a disk image or block device into a replica",
		Long: `Takes one recovery point of a quiet source disk (a file or a block device) into
the replica in DIR, creating the replica, sized from the source, on first use.

The scan capture reads the whole source, hashes every block with BLAKE3 and
ships only the blocks whose hash differs from the previous point's; blocks
that became all zeros are sent as holes. The previous point's hashes are kept
in a small hidden file beside the source (or in --state-dir); without them
every block is sent again. The point is committed only once all of it is
durable at the replica, and only then are the new hashes recorded.

--threads sets the parallel streams (1-32), as Site Recovery's
UploadThreadsPerVM. --block-size applies when the replica is created.
Prints the point and the figures: bytes read, shipped, written, seconds.

With --to URL instead of --replica, the point goes to 'standby receiver' at
the recovery site, in TLS 1.3 with --tls-cert/--tls-key (and --ca for the
receiver's CA); --limit-mbps caps the bandwidth of all streams.`,
		Example: `  standby replica sync --source vm1-disk0.img --replica /srv/standby/vm1-disk0
  standby replica sync --source /dev/vg0/snap --replica /srv/standby/db --state-dir /var/lib/standby --threads 8
  standby replica sync --source disk.img --replica r --block-size 1MiB -o json
  standby replica sync --source vm1-disk0.img --to https://dr.example:7443/vm1/disk0 \
      --tls-cert agent.crt --tls-key agent.key --ca receiver-ca.pem --threads 16 --limit-mbps 200`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.bsGiven = cmd.Flags().Changed("block-size")
			if to.url != "" {
				return runReplicaSyncTo(cmd.Context(), e, o, to)
			}
			return runReplicaSync(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.source, "source", "", "source disk: an image file or a block device (quiet while it is read)")
	f.StringVar(&o.replica, "replica", "", "replica directory; created on first use")
	f.IntVar(&o.threads, "threads", replication.DefaultThreads, "parallel streams, 1-32")
	f.StringVar(&o.capture, "capture", "scan", "capture method: scan")
	f.StringVar(&o.blockSize, "block-size", "4MiB", "block size of a new replica (a multiple of 4KiB)")
	f.StringVar(&o.stateDir, "state-dir", "", "where the block hashes of the last point are kept (default: beside the source)")
	f.StringVar(&o.kind, "kind", replica.KindCrash, "kind of point: crash or app")
	addSyncToFlags(f, &to)
	return cmd
}

// ReplicaSyncResult is the output of replica sync.
type ReplicaSyncResult struct {
	Seq     uint64 `json:"seq"`
	Source  string `json:"source"`
	Replica string `json:"replica"`
	Created bool   `json:"created"` // the replica was created by this sync
	replication.Result
	MBPerSec float64 `json:"mbPerSec"` // disk bytes per second, in MB (10^6)
}

func runReplicaSync(ctx context.Context, e *env, o replicaSyncOpts) error {
	if o.source == "" || o.replica == "" {
		return badInputf("--source FILE and --replica DIR are both required")
	}
	switch o.capture {
	case "scan":
	case "tracked":
		return badInputf("--capture tracked: not available in replica sync; use scan")
	default:
		return badInputf("--capture %q: want scan", o.capture)
	}
	if o.threads < 1 || o.threads > replication.MaxThreads {
		return badInputf("--threads %d: want 1 to %d", o.threads, replication.MaxThreads)
	}
	if o.kind != replica.KindCrash && o.kind != replica.KindApp {
		return badInputf("--kind %q: want crash or app", o.kind)
	}
	bs, err := parseBlockSize(o.blockSize)
	if err != nil {
		return badInputf("--block-size %q: %v", o.blockSize, err)
	}
	if _, err := os.Stat(o.source); err != nil {
		return badInputf("--source %s: %v", o.source, err)
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
	r, created, err := openOrCreateReplica(o.replica, size, bs, o.bsGiven, clk)
	if err != nil {
		return err
	}
	defer r.Close()

	bar := newReplicaBar(e)
	bar.start(fmt.Sprintf("sync point %d", nextSeq(r)), size)
	opts := replication.Options{
		Threads: o.threads, Kind: o.kind, StateDir: stateDir, Clock: clk,
		Progress: func(done, total int64) { bar.progress("sync", done, total) },
	}
	res, err := replication.Sync(ctx, o.source, replication.Local(r), opts)
	bar.finish()
	if err != nil && res.Point.Seq == 0 {
		return err
	}
	out := ReplicaSyncResult{Seq: res.Point.Seq, Source: o.source, Replica: o.replica, Created: created, Result: res}
	if res.Seconds > 0 {
		out.MBPerSec = float64(res.Size) / res.Seconds / 1e6
	}
	if rerr := e.render(out, func(w io.Writer) { printReplicaSync(w, out) }); rerr != nil {
		return rerr
	}
	return err // the point is committed, but its hashes were not saved
}

// openOrCreateReplica opens the replica in dir, or creates it for a disk of
// size bytes when dir is missing or empty.
func openOrCreateReplica(dir string, size, bs int64, bsGiven bool, clk clock.Clock) (*replica.Replica, bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(ents) == 0) {
		r, err := replica.Create(dir, size, replica.Options{BlockSize: bs, Clock: clk})
		return r, true, err
	}
	if err != nil {
		return nil, false, badInputf("--replica %s: %v", dir, err)
	}
	r, err := openReplica(dir, nil)
	if err != nil {
		return nil, false, err
	}
	if bsGiven && r.BlockSize() != bs {
		r.Close()
		return nil, false, badInputf("--block-size %d: the replica in %s has %d-byte blocks, fixed when it was created; leave --block-size out", bs, dir, r.BlockSize())
	}
	return r, false, nil
}

// defaultStateDir is where a block device's hashes are kept: losing them
// costs one full resend, so the user's cache directory is the right home.
func defaultStateDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", badInputf("a block device needs --state-dir: %v", err)
	}
	d = filepath.Join(d, "standby", "scan")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("create the state directory %s: %w", d, err)
	}
	return d, nil
}

// parseBlockSize reads sizes such as 4MiB, 512KiB, 1M or 65536.
func parseBlockSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("want a size such as 4MiB, 1MiB or 65536")
	}
	v := n * mult
	if v < 4096 || v%4096 != 0 || v > 1<<30 {
		return 0, errors.New("want a multiple of 4KiB between 4KiB and 1GiB")
	}
	return v, nil
}

func printReplicaSync(w io.Writer, r ReplicaSyncResult) {
	verb := "point"
	if r.Created {
		verb = "new replica, point"
	}
	fmt.Fprintf(w, "%s %d of %s (%s, %s)\n", verb, r.Seq, r.Replica, r.Point.Kind, r.Point.Time.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  read     %s of %s\n", byteSize(r.BytesRead), r.Source)
	fmt.Fprintf(w, "  shipped  %s in %s and %s over %s\n", byteSize(r.BytesShipped),
		plural(int(r.Extents), "extent"), plural(int(r.Holes), "hole"), plural(r.Threads, "stream"))
	fmt.Fprintf(w, "  written  %s\n", byteSize(r.BytesWritten))
	fmt.Fprintf(w, "  time     %.2f s, %.0f MB/s of a %s disk\n", r.Seconds, r.MBPerSec, byteSize(r.Size))
	if r.Full && r.Seq > 1 {
		fmt.Fprintf(w, "  every block was sent: %s\n", r.Reason)
	}
}

// nextSeq is the sequence number the next point of r gets.
func nextSeq(r *replica.Replica) uint64 {
	if ps := r.Points(); len(ps) > 0 {
		return ps[len(ps)-1].Seq + 1
	}
	return 1
}
