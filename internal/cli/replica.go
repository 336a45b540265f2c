package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

func newReplicaCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replica",
		Short: "Replicas of disks and their recovery points: list, verify, export, prune",
		Long: `A replica is the recovery-site copy of one disk: a sparse base image at the
newest recovery point and an undo file per older point, in one directory
(docs/format.md). These commands work on that directory directly; no daemon is
needed, but only one process may use a replica at a time.`,
		Example: `  standby replica points --replica /srv/standby/vm1-disk0
  standby replica verify --replica /srv/standby/vm1-disk0
  standby replica export --replica /srv/standby/vm1-disk0 --point 12 --out restore.img`,
		RunE: groupRunE,
	}
	// The replica group's subcommands. Commands that take points (sync) are
	// added to this list from their own files.
	cmd.AddCommand(
		newReplicaPointsCmd(e),
		newReplicaVerifyCmd(e),
		newReplicaExportCmd(e),
		newReplicaPruneCmd(e),
		newReplicaPinCmd(e),
		newReplicaSyncCmd(e),
		newReplicaServeCmd(e),
		newReplicaWatchCmd(e),
	)
	return cmd
}

// openReplica opens an existing replica for a command. A directory that is
// not a replica is the user's input being wrong.
func openReplica(dir string, progress func(op string, done, total int64)) (*replica.Replica, error) {
	if dir == "" {
		return nil, badInputf("--replica DIR is required")
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, badInputf("--replica %s: %v", dir, err)
	}
	r, err := replica.Open(dir, replica.Options{Clock: clock.Real{}, Progress: progress})
	if err != nil && strings.Contains(err.Error(), "not a replica directory") {
		return nil, badInput(err)
	}
	return r, err
}

// pointArg reads --point: a sequence number, or latest.
func pointArg(r *replica.Replica, s string) (uint64, error) {
	pts := r.Points()
	if len(pts) == 0 {
		return 0, badInputf("the replica in %s has no committed point yet", r.Dir())
	}
	if s == "" || s == "latest" {
		return pts[len(pts)-1].Seq, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, badInputf("--point %q: want a point's sequence number or latest", s)
	}
	for _, p := range pts {
		if p.Seq == n {
			return n, nil
		}
	}
	return 0, badInputf("--point %d: no such point in %s (see standby replica points)", n, r.Dir())
}

// ReplicaPointsResult is the output of replica points.
type ReplicaPointsResult struct {
	Replica   string          `json:"replica"`
	Size      int64           `json:"size"`
	BlockSize int64           `json:"blockSize"`
	Points    []replica.Point `json:"points"`
}

func newReplicaPointsCmd(e *env) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "points --replica DIR",
		Short: "List the recovery points of a replica",
		Long: `Lists the committed recovery points of the replica in DIR, oldest first: the
sequence number, the time of the cut, the kind (crash- or app-consistent), the
bytes of data the point wrote, and whether it is pinned against retention.`,
		Example: `  standby replica points --replica /srv/standby/vm1-disk0
  standby replica points --replica /srv/standby/vm1-disk0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaPoints(cmd.Context(), e, dir)
		},
	}
	cmd.Flags().StringVar(&dir, "replica", "", "replica directory")
	return cmd
}

func runReplicaPoints(_ context.Context, e *env, dir string) error {
	r, err := openReplica(dir, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	res := ReplicaPointsResult{Replica: dir, Size: r.Size(), BlockSize: r.BlockSize(), Points: r.Points()}
	return e.render(res, func(w io.Writer) {
		fmt.Fprintf(w, "%s: %s disk, %s blocks, %s\n", dir, byteSize(res.Size), byteSize(res.BlockSize), plural(len(res.Points), "point"))
		if len(res.Points) == 0 {
			return
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tWRITTEN\tPINNED")
		for _, p := range res.Points {
			pin := ""
			if p.Pinned {
				pin = "pinned"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", p.Seq, p.Time.UTC().Format(time.RFC3339), p.Kind, byteSize(p.Bytes), pin)
		}
		tw.Flush()
	})
}

type replicaVerifyOpts struct {
	dir, point, source string
}

// ReplicaVerifyResult is the output of replica verify.
type ReplicaVerifyResult struct {
	Replica string                 `json:"replica"`
	Source  string                 `json:"source,omitempty"`
	OK      bool                   `json:"ok"`
	Points  []ReplicaVerifiedPoint `json:"points"`
}

// ReplicaVerifiedPoint is the verify outcome of one point.
type ReplicaVerifiedPoint struct {
	replica.VerifyReport
	OK      bool    `json:"ok"`
	Seconds float64 `json:"seconds"`
}

func newReplicaVerifyCmd(e *env) *cobra.Command {
	var o replicaVerifyOpts
	cmd := &cobra.Command{
		Use:   "verify --replica DIR [--point N] [--source FILE]",
		Short: "Rehash recovery points and compare them with the hashes recorded at commit",
		Long: `Reads every block of a recovery point as the replica would serve it, hashes it
with BLAKE3 and compares it with the hash recorded when the point was
committed. A damaged block is named with the file it came from (base, undo N,
or staging for a point not yet committed). Without --point every point is
verified.

With --source the point (default: the newest) is also compared with a source
disk, block by block: the blocks that differ are listed.

Exits 1 when any damage or difference is found.`,
		Example: `  standby replica verify --replica /srv/standby/vm1-disk0
  standby replica verify --replica /srv/standby/vm1-disk0 --point 12
  standby replica verify --replica /srv/standby/vm1-disk0 --source vm1-disk0.img -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaVerify(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "replica", "", "replica directory")
	f.StringVar(&o.point, "point", "", "point to verify: a sequence number or latest (default: all points; with --source, latest)")
	f.StringVar(&o.source, "source", "", "source disk to compare the point with, block by block")
	return cmd
}

func runReplicaVerify(ctx context.Context, e *env, o replicaVerifyOpts) error {
	bar := newReplicaBar(e)
	r, err := openReplica(o.dir, bar.progress)
	if err != nil {
		return err
	}
	defer r.Close()
	var seqs []uint64
	if o.point != "" || o.source != "" {
		seq, err := pointArg(r, o.point)
		if err != nil {
			return err
		}
		seqs = []uint64{seq}
	} else {
		for _, p := range r.Points() {
			seqs = append(seqs, p.Seq)
		}
		if len(seqs) == 0 {
			return badInputf("the replica in %s has no committed point yet", o.dir)
		}
	}
	var source *os.File
	if o.source != "" {
		if source, err = os.Open(o.source); err != nil {
			return badInputf("--source %s: %v", o.source, err)
		}
		defer source.Close()
	}
	res := ReplicaVerifyResult{Replica: o.dir, Source: o.source, OK: true, Points: []ReplicaVerifiedPoint{}}
	for _, seq := range seqs {
		bar.start(fmt.Sprintf("verify point %d", seq), r.Size())
		var rep replica.VerifyReport
		if source != nil {
			rep, err = r.VerifyPoint(ctx, seq, source)
		} else {
			rep, err = r.VerifyPoint(ctx, seq, nil)
		}
		bar.finish()
		var ve *replica.VerifyError
		if err != nil && !errors.As(err, &ve) {
			return err
		}
		vp := ReplicaVerifiedPoint{VerifyReport: rep, OK: err == nil, Seconds: rep.Elapsed.Seconds()}
		res.OK = res.OK && vp.OK
		res.Points = append(res.Points, vp)
	}
	if err := e.render(res, func(w io.Writer) { printReplicaVerify(w, res) }); err != nil {
		return err
	}
	if !res.OK {
		return errFailed
	}
	return nil
}

func printReplicaVerify(w io.Writer, res ReplicaVerifyResult) {
	damaged := false
	for _, p := range res.Points {
		if p.OK {
			fmt.Fprintf(w, "point %d: ok, %s in %s checked in %.1f s\n", p.Seq, byteSize(p.Bytes), plural(int(p.Blocks), "block"), p.Seconds)
			continue
		}
		var bad, differ []replica.Damage
		for _, d := range p.Damage {
			if d.File == "source" {
				differ = append(differ, d)
			} else {
				bad = append(bad, d)
			}
		}
		if len(bad) > 0 {
			damaged = true
			fmt.Fprintf(w, "point %d: DAMAGED, %s\n", p.Seq, plural(len(bad), "bad block"))
			for _, d := range bad {
				fmt.Fprintf(w, "  block %d (offset %d) in %s: %s\n", d.Block, d.Offset, d.File, d.Path)
			}
		}
		if len(differ) > 0 {
			fmt.Fprintf(w, "point %d: differs from %s in %s\n", p.Seq, res.Source, plural(len(differ), "block"))
			for _, d := range differ {
				fmt.Fprintf(w, "  block %d (offset %d)\n", d.Block, d.Offset)
			}
		}
	}
	if damaged {
		fmt.Fprintln(w, "a damaged point cannot be exported: use an older point that verifies, or resync the disk")
	}
}

type replicaExportOpts struct {
	dir, point, out string
}

// ReplicaExportResult is the output of replica export.
type ReplicaExportResult struct {
	Replica string `json:"replica"`
	replica.ExportStats
	Seconds  float64 `json:"seconds"`
	MBPerSec float64 `json:"mbPerSec"` // image bytes per second, in MB (10^6)
}

func newReplicaExportCmd(e *env) *cobra.Command {
	var o replicaExportOpts
	cmd := &cobra.Command{
		Use:   "export --replica DIR --point N --out FILE",
		Short: "Write a recovery point to a sparse raw image file",
		Long: `Writes the disk as it was at a recovery point to FILE, a raw image in which
all-zero blocks are holes. Every block is checked against the hash recorded
when the point was committed; on any mismatch the export stops, FILE is
removed and the damaged block is named (exit 1). The file is synced to disk
before the command returns. FILE is replaced if it exists.`,
		Example: `  standby replica export --replica /srv/standby/vm1-disk0 --point 12 --out restore.img
  standby replica export --replica /srv/standby/vm1-disk0 --point latest --out /var/tmp/disk0.img -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaExport(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "replica", "", "replica directory")
	f.StringVar(&o.point, "point", "", "point to export: a sequence number or latest (required)")
	f.StringVar(&o.out, "out", "", "image file to write (required)")
	return cmd
}

func runReplicaExport(ctx context.Context, e *env, o replicaExportOpts) error {
	if o.point == "" || o.out == "" {
		return badInputf("--point N and --out FILE are both required")
	}
	bar := newReplicaBar(e)
	r, err := openReplica(o.dir, bar.progress)
	if err != nil {
		return err
	}
	defer r.Close()
	seq, err := pointArg(r, o.point)
	if err != nil {
		return err
	}
	bar.start(fmt.Sprintf("export point %d", seq), r.Size())
	st, err := r.Export(ctx, seq, o.out)
	bar.finish()
	var ve *replica.VerifyError
	if errors.As(err, &ve) {
		return &exitError{code: ExitFailure, err: err}
	}
	if err != nil {
		return err
	}
	res := ReplicaExportResult{Replica: o.dir, ExportStats: st, Seconds: st.Elapsed.Seconds()}
	if res.Seconds > 0 {
		res.MBPerSec = float64(st.Bytes) / res.Seconds / 1e6
	}
	return e.render(res, func(w io.Writer) {
		fmt.Fprintf(w, "point %d exported to %s: %s (%s of data, the rest holes), every block checked\n",
			res.Seq, res.Path, byteSize(res.Bytes), byteSize(res.DataBytes))
		fmt.Fprintf(w, "  %.2f s, %.0f MB/s, synced\n", res.Seconds, res.MBPerSec)
	})
}

type replicaPruneOpts struct {
	dir    string
	policy replica.Retention
	dryRun bool
}

// ReplicaPruneResult is the output of replica prune.
type ReplicaPruneResult struct {
	Replica   string             `json:"replica"`
	DryRun    bool               `json:"dryRun"`
	Dropped   []uint64           `json:"dropped"`
	Decisions []replica.Decision `json:"decisions"`
}

func newReplicaPruneCmd(e *env) *cobra.Command {
	var o replicaPruneOpts
	cmd := &cobra.Command{
		Use:   "prune --replica DIR [--retention 24h]",
		Short: "Remove recovery points by retention: all recent, then one an hour",
		Long: `Applies retention to the replica in DIR, as Site Recovery does: every point of
the last --recent is kept, then one point per --every period (the newest
app-consistent one if there is one, else the newest), up to --retention; older
points are removed. The newest point and pinned points are always kept.
Removing a point in the middle merges its undo file into the previous point's.

--dry-run shows the decisions without removing anything.`,
		Example: `  standby replica prune --replica /srv/standby/vm1-disk0
  standby replica prune --replica /srv/standby/vm1-disk0 --retention 72h --recent 4h --dry-run
  standby replica prune --replica /srv/standby/vm1-disk0 --retention 24h -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.policy.Window <= 0 || o.policy.Recent <= 0 || o.policy.Every <= 0 {
				return badInputf("--retention, --recent and --every must be more than 0")
			}
			return runReplicaPrune(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "replica", "", "replica directory")
	f.DurationVar(&o.policy.Window, "retention", replica.DefaultRetention.Window, "points older than this are removed")
	f.DurationVar(&o.policy.Recent, "recent", replica.DefaultRetention.Recent, "every point younger than this is kept")
	f.DurationVar(&o.policy.Every, "every", replica.DefaultRetention.Every, "beyond --recent, one point per period is kept")
	f.BoolVar(&o.dryRun, "dry-run", false, "show what would be removed, remove nothing")
	return cmd
}

func runReplicaPrune(ctx context.Context, e *env, o replicaPruneOpts) error {
	r, err := openReplica(o.dir, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	clk := clock.Real{}
	res := ReplicaPruneResult{Replica: o.dir, DryRun: o.dryRun, Dropped: []uint64{},
		Decisions: o.policy.Plan(r.Points(), clk.Now())}
	if o.dryRun {
		for _, d := range res.Decisions {
			if !d.Keep {
				res.Dropped = append(res.Dropped, d.Seq)
			}
		}
	} else if res.Dropped, err = r.Prune(ctx, o.policy); err != nil {
		return err
	}
	return e.render(res, func(w io.Writer) {
		verb := "removed"
		if res.DryRun {
			verb = "would remove"
		}
		fmt.Fprintf(w, "%s: %s %s\n", o.dir, verb, plural(len(res.Dropped), "point"))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tKEPT\tWHY")
		for _, d := range res.Decisions {
			kept := "no"
			if d.Keep {
				kept = "yes"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\n", d.Seq, kept, d.Reason)
		}
		tw.Flush()
	})
}

type replicaPinOpts struct {
	dir, point string
	off        bool
}

func newReplicaPinCmd(e *env) *cobra.Command {
	var o replicaPinOpts
	cmd := &cobra.Command{
		Use:   "pin --replica DIR --point N [--off]",
		Short: "Keep a recovery point from retention, or release it",
		Long: `Pins a recovery point so that prune never removes it (drills pin the point
they boot from), or with --off releases it to retention again.`,
		Example: `  standby replica pin --replica /srv/standby/vm1-disk0 --point 12
  standby replica pin --replica /srv/standby/vm1-disk0 --point 12 --off`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaPin(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "replica", "", "replica directory")
	f.StringVar(&o.point, "point", "", "point to pin: a sequence number or latest (required)")
	f.BoolVar(&o.off, "off", false, "release the pin")
	return cmd
}

func runReplicaPin(_ context.Context, e *env, o replicaPinOpts) error {
	if o.point == "" {
		return badInputf("--point N is required")
	}
	r, err := openReplica(o.dir, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	seq, err := pointArg(r, o.point)
	if err != nil {
		return err
	}
	if err := r.Pin(seq, !o.off); err != nil {
		return err
	}
	res := struct {
		Replica string `json:"replica"`
		Seq     uint64 `json:"seq"`
		Pinned  bool   `json:"pinned"`
	}{o.dir, seq, !o.off}
	return e.render(res, func(w io.Writer) {
		state := "pinned"
		if o.off {
			state = "unpinned"
		}
		fmt.Fprintf(w, "point %d of %s %s\n", seq, o.dir, state)
	})
}

// replicaBar draws the progress of verify and export on a terminal, when the
// output is text; otherwise its methods do nothing.
type replicaBar struct {
	mu  sync.Mutex
	on  bool
	w   io.Writer
	bar *progressbar.ProgressBar
}

func newReplicaBar(e *env) *replicaBar {
	f, ok := e.stdout.(*os.File)
	on := ok && e.output == "text"
	if on {
		fi, err := f.Stat()
		on = err == nil && fi.Mode()&os.ModeCharDevice != 0
	}
	return &replicaBar{on: on, w: e.stderr}
}

func (b *replicaBar) start(desc string, total int64) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func (b *replicaBar) progress(_ string, done, _ int64) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		_ = b.bar.Set64(done)
	}
}

func (b *replicaBar) finish() {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		_ = b.bar.Finish()
		b.bar = nil
	}
}

// byteSize writes n in binary units.
func byteSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < 4 {
		v /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[u])
}
