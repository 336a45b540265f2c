package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/spec"
)

// defaultDir is where `standby up` keeps its state unless told otherwise.
const defaultDir = ".standby"

type upOpts struct {
	file, dir, listen, executable string
}

func newUpCmd(e *env) *cobra.Command {
	var o upOpts
	cmd := &cobra.Command{
		Use:   "up -f SPEC",
		Short: "Run the daemon: protect the spec's VMs and keep its recovery plans ready",
		Long: `up starts the spec's sites as they run today (local sites: networks modelled,
machines as processes on loopback addresses), protects every VM (an initial
replication, then a point on each policy's schedule), resumes any job a
previous daemon left unfinished, and serves the API that status, points,
drill, failover, commit, reprotect, failback and jobs talk to.

Everything lives in --dir (state.db, disks, replicas, recovered disks, the
admin token). Stop it with Ctrl-C; a new up on the same directory takes over.
Sites whose provider is netlab (root) are built as namespaces; they outlive
the daemon like local machines do, and standby lab down removes them.`,
		Example: `  standby up -f examples/local-quickstart.yaml
  standby status
  standby drill contoso-app && standby drill cleanup contoso-app
  standby failover contoso-app --point latest`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runUp(cmd.Context(), e, o) },
	}
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "DR spec file (YAML)")
	cmd.Flags().StringVar(&o.dir, "dir", envOr("STANDBY_DIR", defaultDir), "state directory")
	cmd.Flags().StringVar(&o.listen, "listen", "127.0.0.1:7420", "address of the API")
	cmd.Flags().StringVar(&o.executable, "executable", "", "the standby binary the VMs run (default: this program)")
	_ = cmd.Flags().MarkHidden("executable")
	return cmd
}

func runUp(ctx context.Context, e *env, o upOpts) error {
	if o.file == "" {
		return badInputf("-f SPEC is required")
	}
	s, err := spec.Load(o.file)
	if err != nil {
		return err
	}
	exe := o.executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	d, err := daemon.Open(ctx, daemon.Options{Spec: s, Dir: dir, Executable: exe, Lab: strings.ReplaceAll(dir, "/", "_")})
	if err != nil {
		if strings.Contains(err.Error(), "provider") {
			return badInput(err)
		}
		return err
	}
	defer d.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("up: listen on %s: %w (is another daemon running?)", o.listen, err)
	}
	if err := d.StartSites(ctx); err != nil {
		ln.Close()
		return err
	}
	if lab := d.Lab(); lab != nil {
		log.Info("sites started as namespaces; look with standby lab trace -f SPEC --lab-name "+lab.Lab()+", remove with standby lab down --lab "+lab.Lab(), "spec", s.Name, "dir", dir)
	} else {
		log.Info("sites started", "spec", s.Name, "dir", dir)
	}
	bar := newReplicaBar(e)
	current := ""
	err = d.Protect(ctx, func(vm string, done, total int64) {
		if vm != current {
			bar.finish()
			bar.start("initial replication of "+vm, total)
			current = vm
		}
		bar.progress(vm, done, total)
	})
	bar.finish()
	if err != nil {
		ln.Close()
		return err
	}
	for _, h := range d.Health() {
		log.Info("protected", "vm", h.VM, "point", h.LastPoint, "shipped", byteSize(h.Shipped))
	}
	if pj, err := d.Provision(ctx); err != nil {
		log.Warn("provision the target network", "err", err)
	} else if pj.ID != "" {
		log.Info("target network provisioned ahead of failover", "job", pj.ID, "status", pj.Status, "steps", len(pj.Steps))
	}
	if ids, err := d.Driver.StartUnfinished(ctx); err != nil {
		log.Warn("resume unfinished jobs", "err", err)
	} else if len(ids) > 0 {
		log.Info("resumed unfinished jobs", "jobs", ids)
	}
	go d.Replicate(ctx)
	log.Info("serving", "api", "http://"+ln.Addr().String(), "dashboard", "http://"+ln.Addr().String()+"/ui/", "token", filepath.Join(dir, "admin.token"))
	return d.Serve(ctx, ln, nil)
}
