package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/spec"
	"github.com/standby-dr/standby/internal/workload"
)

func newWorkloadCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workload",
		Short: "Run a demo workload inside a machine",
	}
	cmd.AddCommand(newLedgerCmd(e))
	return cmd
}

type ledgerOpts struct {
	disk     string
	diskPath string
	listen   string
	rate     string
	size     string
}

func newLedgerCmd(e *env) *cobra.Command {
	var o ledgerOpts
	cmd := &cobra.Command{
		Use:   "ledger --disk NAME --listen ADDR",
		Short: "Append numbered, checksummed records to a disk and serve their count",
		Long: `ledger appends checksummed, numbered records to its data disk at a steady
rate and serves GET /health and GET /records. On start it scans the disk,
recovers up to the last complete record and reports any torn record it skipped:
after a failover, /records tells how many records the recovery point held.

--disk NAME reads the disk's path from STANDBY_DISK_<NAME>, as a machine's boot
command sees it; --disk-path gives the path directly. A listen address without
a host (:8080) listens on STANDBY_IP_0, or 127.0.0.1 when that is unset.`,
		Example: `  standby workload ledger --disk data --listen :8080
  standby workload ledger --disk-path /tmp/data.img --listen 127.0.0.1:8080 --rate 200/s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLedger(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.disk, "disk", "", "name of the data disk (its path is in STANDBY_DISK_<NAME>)")
	f.StringVar(&o.diskPath, "disk-path", "", "path of the data disk, instead of --disk")
	f.StringVar(&o.listen, "listen", ":8080", "address to serve /health and /records on")
	f.StringVar(&o.rate, "rate", "50/s", "records to append: N/s, N/m or N/h")
	f.StringVar(&o.size, "size", "64MiB", "size of the disk file when it does not exist yet")
	return cmd
}

func runLedger(ctx context.Context, e *env, o ledgerOpts) error {
	path := o.diskPath
	switch {
	case o.disk != "" && o.diskPath != "":
		return badInputf("give --disk or --disk-path, not both")
	case o.disk != "":
		p, err := workload.DiskPath(o.disk, os.Getenv)
		if err != nil {
			return badInput(err)
		}
		path = p
	case path == "":
		return badInputf("give the data disk: --disk NAME or --disk-path FILE")
	}
	rate, err := workload.ParseRate(o.rate)
	if err != nil {
		return badInputf("--rate: %w", err)
	}
	size, err := spec.ParseSize(o.size)
	if err != nil {
		return badInputf("--size: %w", err)
	}
	addr, err := workload.ResolveListen(o.listen, os.Getenv)
	if err != nil {
		return badInputf("--listen: %w", err)
	}

	l, err := workload.OpenLedger(path, workload.LedgerOptions{Size: int64(size), Clock: clock.Real{}})
	if err != nil {
		return err
	}
	defer l.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ledger: listen on %s: %w; pick a free address with --listen", addr, err)
	}
	rec := l.Recovery()
	if err := e.render(rec, func(w io.Writer) { printRecovery(w, rec, addr, rate) }); err != nil {
		return err
	}

	svc := workload.NewService(l, rate, clock.Real{})
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	runErr := svc.Run(ctx)
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ledger: serve on %s: %w", addr, err)
	}
	if runErr != nil {
		return runErr
	}
	if e.output == "text" {
		st := l.Stats()
		fmt.Fprintf(e.stdout, "ledger stopped: %d records, last sequence %d\n", st.Count, st.LastSeq)
	}
	return nil
}

func printRecovery(w io.Writer, r workload.Recovery, addr string, rate float64) {
	switch {
	case r.Formatted:
		fmt.Fprintf(w, "ledger %s: formatted %s (%d records before it wraps)\n", r.Ledger, r.Disk, r.Capacity)
	case r.Count == 0:
		fmt.Fprintf(w, "ledger %s: recovered no records from %s\n", r.Ledger, r.Disk)
	default:
		fmt.Fprintf(w, "ledger %s: recovered %d records from %s (sequence %d to %d, last written %s)\n",
			r.Ledger, r.Count, r.Disk, r.FirstSeq, r.LastSeq, r.LastTime.Format(time.RFC3339Nano))
	}
	if r.TornSkipped > 0 {
		fmt.Fprintf(w, "skipped %d torn or orphaned slots:\n", r.TornSkipped)
		for _, s := range r.Skipped {
			fmt.Fprintf(w, "  slot %d (sequence %d): %s\n", s.Slot, s.Seq, s.Reason)
		}
	}
	fmt.Fprintf(w, "appending %g records a second; serving http://%s/health and /records\n", rate, addr)
}
