package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replication"
)

type replicaWatchOpts struct {
	status, mount string
	once          bool
	interval      time.Duration
}

func newReplicaWatchCmd(e *env) *cobra.Command {
	var o replicaWatchOpts
	cmd := &cobra.Command{
		Use:   "watch [--mount PATH | --status FILE] [--once]",
		Short: "Show the state, RPO and throughput of a running replica serve",
		Long: `Reads the status file a standby replica serve writes each second and shows the
group's state (initial-sync with progress and ETA, protected, resyncing,
paused, error with the reason), its RPO and alert, the write and shipping
throughput, the write pause of the cuts, and each disk's last point.

The status file is found from the first --mount given to serve, or named
with --status. The display refreshes every --interval until interrupted;
--once prints it once. With -o json each refresh is one JSON object per line.
A status not updated for 5 seconds means serve is not running: --once then
exits 1.`,
		Example: `  standby replica watch --mount /run/vm1/disk0
  standby replica watch --mount /run/vm1/disk0 --once -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaWatch(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.mount, "mount", "", "the first --mount of the serve to watch")
	f.StringVar(&o.status, "status", "", "the status file of the serve to watch")
	f.BoolVar(&o.once, "once", false, "print once and exit")
	f.DurationVar(&o.interval, "interval", time.Second, "refresh interval")
	return cmd
}

// staleAfter is how old a status may be before serve is taken as gone.
const staleAfter = 5 * time.Second

func runReplicaWatch(ctx context.Context, e *env, o replicaWatchOpts) error {
	path := o.status
	switch {
	case path != "" && o.mount != "":
		return badInputf("--mount and --status exclude each other")
	case path == "" && o.mount == "":
		return badInputf("--mount PATH or --status FILE is required")
	case path == "":
		path = serveStatusPath(o.mount)
	}
	if o.interval <= 0 {
		return badInputf("--interval %s: want more than 0", o.interval)
	}
	clk := clock.Real{}
	for first := true; ; first = false {
		st, err := readServeStatus(path)
		if err != nil {
			if o.once || first {
				return err
			}
			fmt.Fprintf(e.stderr, "%v\n", err)
		} else {
			age := clk.Since(st.Time)
			stale := age > staleAfter && st.State != replication.StateStopped
			if err := e.render(st, func(w io.Writer) { printWatch(w, st, age, stale) }); err != nil {
				return err
			}
			if o.once {
				if stale {
					return errFailed
				}
				return nil
			}
		}
		t := time.NewTimer(o.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func readServeStatus(path string) (*ServeStatus, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, badInputf("no status at %s: is standby replica serve running with that --mount (or --status)?", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read the status %s: %w", path, err)
	}
	var st ServeStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read the status %s: %w", path, err)
	}
	return &st, nil
}

func printWatch(w io.Writer, st *ServeStatus, age time.Duration, stale bool) {
	rpo := "none yet"
	if st.RPOSeconds != nil {
		rpo = seconds(*st.RPOSeconds)
	}
	alert := ""
	if st.RPOAlert {
		alert = " ALERT"
	}
	fmt.Fprintf(w, "%s: %s, RPO %s%s (threshold %s), points every %s, app-consistent %s\n",
		st.Group, st.State, rpo, alert, seconds(st.RPOThresholdSeconds), st.CrashEvery, st.AppEvery)
	if stale {
		fmt.Fprintf(w, "  NOT UPDATED for %s: serve (pid %d) is not running\n", age.Round(time.Second), st.PID)
	}
	if st.Reason != "" {
		fmt.Fprintf(w, "  error: %s\n", st.Reason)
	}
	fmt.Fprintf(w, "  written %s/s, shipped %s/s; %d points, %d idle cuts; write pause p50 %.3f ms p99 %.3f ms\n",
		byteSize(int64(st.WrittenBps)), byteSize(int64(st.ShippedBps)), st.Points, st.EmptyCuts, st.BarrierMs.P50, st.BarrierMs.P99)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DISK\tSTATE\tLAST POINT\tWRITTEN\tSHIPPED\tPROGRESS")
	for _, vm := range st.VMs {
		for _, d := range vm.Disks {
			last := "-"
			if p := d.LastPoint; p != nil {
				last = fmt.Sprintf("%d %s %s", p.Seq, p.Time.Local().Format("15:04:05.000"), p.Kind)
			}
			prog := ""
			if p := d.Progress; p != nil {
				prog = fmt.Sprintf("%.0f%% of %s, ETA %s", p.Percent, byteSize(p.Total), seconds(p.ETASeconds))
			}
			state := d.State
			if d.Reason != "" && d.State != replication.StateProtected {
				state += " (" + strings.TrimSpace(d.Reason) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, state, last, byteSize(d.Tracking.BytesWritten), byteSize(d.BytesShipped), prog)
		}
	}
	tw.Flush()
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}
