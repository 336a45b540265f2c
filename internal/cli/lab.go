package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/spec"
)

func newLabCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build a spec's sites as real networks of Linux namespaces (root)",
		Long: `The network lab (the netlab provider). It builds a DR spec's sites on this machine
from Linux network namespaces, routed the way Azure routes: every VM, appliance
and gateway is a namespace on its site's fabric holding its subnet's effective
routes, peerings are fabric rules, circuits are links to the on-premises hosts.
Needs root.
  up      builds the source sites, the pre-provisioned target network and the
          on-premises hosts, and starts the protected VMs from sparse disk files
  status  lists what the lab holds
  exec    runs a command inside a VM or host (site/vm, onprem/host)
  trace   sends real TTL-limited probes and names each hop
  down    removes everything of the lab, also after a crash`,
		Example: `  standby lab up -f examples/hub-spoke-two-circuits.yaml
  standby lab exec -f examples/hub-spoke-two-circuits.yaml hq/client -- curl -s http://10.1.0.4:8080/health
  standby lab trace -f examples/hub-spoke-two-circuits.yaml --from hq/client --to 10.1.0.4
  standby lab down -f examples/hub-spoke-two-circuits.yaml`,
		RunE: groupRunE,
	}
	cmd.AddCommand(newLabUpCmd(e), newLabStatusCmd(e), newLabExecCmd(e), newLabTraceCmd(e), newLabDownCmd(e))
	return cmd
}

// labFlags are what every lab command takes.
type labFlags struct {
	file string
	dir  string
	name string
}

func (f *labFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.file, "file", "f", "", "DR spec file (YAML)")
	cmd.Flags().StringVar(&f.dir, "dir", "", "lab directory (default /run/standby/lab/<lab name>)")
	cmd.Flags().StringVar(&f.name, "lab-name", "", "the lab's name when it is not the spec's (a daemon's lab: standby up prints it)")
}

// open loads the spec and returns the lab's provider.
func (f *labFlags) open(exe string) (*spec.Spec, *netlab.Provider, error) {
	if f.file == "" {
		return nil, nil, badInputf("-f SPEC is required: the DR spec whose sites the lab builds (see examples/)")
	}
	s, err := spec.Load(f.file)
	if err != nil {
		return nil, nil, err
	}
	o := netlab.ForSpec(s)
	if f.name != "" {
		o.Lab = f.name
	}
	o.Dir = f.dir
	o.Executable = exe
	p, err := netlab.New(o)
	if err != nil {
		return nil, nil, err
	}
	return s, p, nil
}

type labUpOpts struct {
	labFlags
	standby string
	wait    time.Duration
	target  bool
}

func newLabUpCmd(e *env) *cobra.Command {
	var o labUpOpts
	cmd := &cobra.Command{
		Use:   "up -f SPEC",
		Short: "Build the lab's networks and hosts and start the protected VMs",
		Long: `Builds the source sites' networks, the target site's pre-provisioned network and
the on-premises hosts as namespaces, creates each protected VM's disks as sparse
files in the lab directory, starts the VMs' boot commands inside their
namespaces ("standby" is this binary) and waits until each answers its health
check. Running it again changes only what differs.`,
		Example: `  standby lab up -f examples/hub-spoke-two-circuits.yaml
  standby lab up -f examples/hub-spoke-two-circuits.yaml --target
  standby lab up -f spec.yaml --wait 0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runLabUp(cmd.Context(), e, o) },
	}
	o.add(cmd)
	cmd.Flags().StringVar(&o.standby, "standby", "", "the standby binary boot commands run (default: this one)")
	cmd.Flags().BoolVar(&o.target, "target", false, "also build the generated target network of net plan (its connection too, unless Azure would refuse it beside the source's)")
	cmd.Flags().DurationVar(&o.wait, "wait", 30*time.Second, "how long to wait for the VMs' health checks (0: do not wait)")
	return cmd
}

// LabUp is the output of lab up.
type LabUp struct {
	Lab        string             `json:"lab"`
	Dir        string             `json:"dir"`
	Namespaces []netlab.Namespace `json:"namespaces"`
	Items      []provider.Item    `json:"items"`
	// Health is each VM's state: started, healthy, or unhealthy and why.
	Health  map[string]string `json:"health,omitempty"`
	Seconds float64           `json:"seconds"`
	Notes   []string          `json:"notes,omitempty"`
}

const labJob = "lab"

func runLabUp(ctx context.Context, e *env, o labUpOpts) error {
	clk := clock.Real{}
	start := clk.Now()
	exe := o.standby
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("lab up: find this binary: %w", err)
		}
	}
	s, p, err := o.open(exe)
	if err != nil {
		return err
	}
	plan := netplan.Derive(s)
	var rs []provider.Resource
	for _, site := range plan.Topology.SourceSites {
		if n := s.Network(site); n != nil {
			rs = append(rs, provider.Resources(n)...)
		}
	}
	if n := s.Network(plan.Topology.TargetSite); n != nil {
		rs = append(rs, provider.Resources(n)...)
	}
	for _, op := range s.OnPremises {
		for i := range op.Hosts {
			rs = append(rs, provider.Resource{Site: op.Name, Host: &op.Hosts[i]})
		}
	}
	if err := p.Apply(ctx, labJob, rs...); err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	var notes []string
	if o.target {
		// A connection Azure would refuse beside the source's (ER-04) is
		// left out, as the runbook makes it only after failover.
		if err := p.Apply(ctx, labJob, provider.Resources(plan.Target)...); errors.Is(err, provider.ErrConflict) {
			notes = append(notes, err.Error())
		} else if err != nil {
			return fmt.Errorf("lab up: target network: %w", err)
		}
	}
	health := map[string]string{}
	var checks []provider.Check
	for _, vm := range s.Protection.VirtualMachines {
		if vm.Boot == nil || len(vm.Boot.Command) == 0 {
			health[vm.Site+"/"+vm.Name] = "not started: no boot command"
			continue
		}
		var disks []provider.Disk
		for _, d := range vm.Disks {
			path := filepath.Join(p.Dir(), "disks", vm.Name+"-"+d.Name+".img")
			if err := sparseFile(path, int64(d.Size)); err != nil {
				return fmt.Errorf("lab up: disk %s of %s: %w", d.Name, vm.Name, err)
			}
			disks = append(disks, provider.Disk{Name: d.Name, Path: path})
		}
		m := provider.VM{Site: vm.Site, Name: vm.Name, NICs: vm.NICs, Disks: disks, Boot: *vm.Boot}
		if err := p.StartVM(ctx, labJob, m); err != nil {
			return fmt.Errorf("lab up: %w", err)
		}
		health[vm.Site+"/"+vm.Name] = "started"
		if hc := vm.HealthCheck; hc != nil && len(m.IPs()) > 0 {
			ip := m.IPs()[0].String()
			c := provider.Check{From: vm.Site + "/" + vm.Name}
			switch {
			case hc.HTTP != nil:
				c.HTTP = fmt.Sprintf("http://%s:%d%s", ip, hc.HTTP.Port, hc.HTTP.Path)
			case hc.TCP != nil:
				c.TCP = fmt.Sprintf("%s:%d", ip, hc.TCP.Port)
			default:
				continue
			}
			checks = append(checks, c)
		}
	}
	failed := false
	if o.wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, o.wait)
		for _, c := range checks {
			res, err := provider.WaitCheck(wctx, p, c, 100*time.Millisecond)
			switch {
			case err == nil && res.OK:
				health[c.From] = "healthy"
			default:
				failed = true
				health[c.From] = "unhealthy: " + res.Detail
			}
		}
		cancel()
	}
	out := LabUp{Lab: p.Lab(), Dir: p.Dir(), Health: health, Notes: notes}
	if out.Namespaces, err = p.Namespaces(ctx); err != nil {
		return err
	}
	if out.Items, err = p.List(ctx, provider.Filter{}); err != nil {
		return err
	}
	out.Seconds = clk.Since(start).Seconds()
	if err := e.render(out, func(w io.Writer) {
		fmt.Fprintf(w, "Lab %s is up in %.1fs: %d namespaces, %d resources (%s)\n", out.Lab, out.Seconds, len(out.Namespaces), len(out.Items), out.Dir)
		for _, it := range out.Items {
			if it.Kind == provider.KindVM {
				fmt.Fprintf(w, "  %s/%s  %s  %s  %s\n", it.Site, it.Name, it.Address, it.State, health[it.Site+"/"+it.Name])
			}
		}
		for _, n := range out.Notes {
			fmt.Fprintln(w, "  note:", n)
		}
		fmt.Fprintln(w, "Next: standby lab trace -f SPEC --from hq/client --to <VM address>; standby lab down -f SPEC")
	}); err != nil {
		return err
	}
	if failed {
		return errFailed
	}
	return nil
}

// sparseFile makes a file of size bytes that takes no space until
// written; an existing one is kept.
func sparseFile(path string, size int64) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LabStatus is the output of lab status.
type LabStatus struct {
	Lab        string             `json:"lab"`
	Dir        string             `json:"dir"`
	Prefix     string             `json:"prefix"`
	Namespaces []netlab.Namespace `json:"namespaces"`
	Items      []provider.Item    `json:"items"`
}

func newLabStatusCmd(e *env) *cobra.Command {
	var o labFlags
	cmd := &cobra.Command{
		Use:     "status -f SPEC",
		Short:   "List the lab's resources, machines and namespaces",
		Example: `  standby lab status -f examples/hub-spoke-two-circuits.yaml -o json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, p, err := o.open("")
			if err != nil {
				return err
			}
			out := LabStatus{Lab: p.Lab(), Dir: p.Dir(), Prefix: netlab.Prefix(p.Lab()), Namespaces: []netlab.Namespace{}, Items: []provider.Item{}}
			ns, err := p.Namespaces(cmd.Context())
			if err != nil {
				return err
			}
			items, err := p.List(cmd.Context(), provider.Filter{})
			if err != nil {
				return err
			}
			out.Namespaces = append(out.Namespaces, ns...)
			out.Items = append(out.Items, items...)
			return e.render(out, func(w io.Writer) {
				if len(ns) == 0 && len(items) == 0 {
					fmt.Fprintf(w, "Lab %s is down (nothing named %s*).\n", out.Lab, out.Prefix)
					return
				}
				fmt.Fprintf(w, "Lab %s (%s, namespaces %s*)\n", out.Lab, out.Dir, out.Prefix)
				for _, it := range items {
					extra := ""
					if it.Kind == provider.KindVM {
						extra = "  " + it.Address + "  " + it.State
					}
					fmt.Fprintf(w, "  %-15s %s/%s  job %s%s\n", it.Kind, it.Site, it.Name, it.Job, extra)
				}
				fmt.Fprintln(w, "Namespaces:")
				for _, n := range ns {
					fmt.Fprintf(w, "  %-40s %s\n", n.Name, n.Node)
				}
			})
		},
	}
	o.add(cmd)
	return cmd
}

func newLabExecCmd(e *env) *cobra.Command {
	var o labFlags
	cmd := &cobra.Command{
		Use:   "exec -f SPEC NODE -- COMMAND [ARGS...]",
		Short: "Run a command inside a VM's or host's namespace",
		Long: `Runs a command inside the namespace of a lab node: a VM (site/vm), an on-premises
host (onprem/host), an appliance or gateway (site/name), a circuit or an
on-premises router (its name). The command's exit status is passed on as 1.`,
		Example: `  standby lab exec -f examples/hub-spoke-two-circuits.yaml hq/client -- ip route
  standby lab exec -f examples/hub-spoke-two-circuits.yaml eastasia/app1 -- ping -c1 10.2.0.4`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return badInputf("write the node, then -- and the command: lab exec -f SPEC hq/client -- ip route")
			}
			_, p, err := o.open("")
			if err != nil {
				return err
			}
			code, err := p.Exec(cmd.Context(), args[0], args[1:], e.stdin, e.stdout, e.stderr)
			if errors.Is(err, provider.ErrNotFound) {
				return badInput(err)
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: ExitFailure, err: fmt.Errorf("%s exited with status %d in %s", args[1], code, args[0])}
			}
			return nil
		},
	}
	o.add(cmd)
	return cmd
}

type labTraceOpts struct {
	labFlags
	from, to string
	hops     int
	timeout  time.Duration
}

func newLabTraceCmd(e *env) *cobra.Command {
	var o labTraceOpts
	cmd := &cobra.Command{
		Use:   "trace -f SPEC --from NODE --to IP",
		Short: "Send real TTL-limited probes and name each hop",
		Long: `Sends ICMP echo requests from inside a node's namespace with TTL 1, 2, ... and
names each node that answers (time exceeded, unreachable, or the echo reply of
the destination). The on-premises router answers as its site's name. Exits 1
when the probes do not reach the destination. Compare with standby net trace,
which predicts the same path from the spec alone.`,
		Example: `  standby lab trace -f examples/hub-spoke-two-circuits.yaml --from hq/client --to 10.1.0.4
  standby lab trace -f examples/hub-spoke-two-circuits.yaml --from eastasia/app1 --to 10.2.0.4 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runLabTrace(cmd.Context(), e, o) },
	}
	o.add(cmd)
	cmd.Flags().StringVar(&o.from, "from", "", "where the probes start: site/vm or onprem/host")
	cmd.Flags().StringVar(&o.to, "to", "", "destination IP address")
	cmd.Flags().IntVar(&o.hops, "max-hops", 16, "largest TTL to try")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 400*time.Millisecond, "how long to wait for each answer")
	return cmd
}

func runLabTrace(ctx context.Context, e *env, o labTraceOpts) error {
	if o.from == "" || o.to == "" {
		return badInputf("--from and --to are required (for example --from hq/client --to 10.1.0.4)")
	}
	dst, err := netip.ParseAddr(o.to)
	if err != nil || !dst.Is4() {
		return badInputf("--to %q: not an IPv4 address", o.to)
	}
	_, p, err := o.open("")
	if err != nil {
		return err
	}
	t, err := p.Trace(ctx, o.from, dst, netlab.TraceOptions{MaxHops: o.hops, Timeout: o.timeout})
	if errors.Is(err, provider.ErrNotFound) || errors.Is(err, provider.ErrInvalid) {
		return badInput(err)
	}
	if err != nil {
		return err
	}
	if err := e.render(t, func(w io.Writer) {
		fmt.Fprintf(w, "Real trace %s -> %s\n", t.From, t.To)
		for _, h := range t.Hops {
			if h.Reply == "none" {
				fmt.Fprintf(w, "  %2d  *\n", h.TTL)
				continue
			}
			fmt.Fprintf(w, "  %2d  %-28s %-15s %-13s %s ms\n", h.TTL, h.Node, h.Address, h.Reply, strconv.FormatFloat(h.RTTms, 'f', 3, 64))
		}
		fmt.Fprintf(w, "%s: %s\n", t.Result, t.Reason)
	}); err != nil {
		return err
	}
	if t.Result != "delivered" {
		return errFailed
	}
	return nil
}

type labDownOpts struct {
	labFlags
	lab string
}

func newLabDownCmd(e *env) *cobra.Command {
	var o labDownOpts
	cmd := &cobra.Command{
		Use:   "down -f SPEC",
		Short: "Remove everything of the lab, also after a crash",
		Long: `Stops the lab's VMs (SIGTERM, then SIGKILL), removes every namespace named with the
lab's prefix (their links and processes go with them) and the lab directory.
It needs no state: after a crash it finds what is left by name. On a lab that is
down it does nothing. --lab NAME works without the spec.`,
		Example: `  standby lab down -f examples/hub-spoke-two-circuits.yaml
  standby lab down --lab contoso-eastasia`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			lab := o.lab
			if lab == "" {
				if o.file == "" {
					return badInputf("-f SPEC or --lab NAME is required")
				}
				s, err := spec.Load(o.file)
				if err != nil {
					return err
				}
				lab = s.Name
			}
			if os.Geteuid() != 0 {
				return errors.New("lab down: removing network namespaces needs root")
			}
			rm, err := netlab.Down(cmd.Context(), lab, o.dir, 5*time.Second)
			if err != nil {
				return err
			}
			return e.render(rm, func(w io.Writer) {
				if len(rm.Namespaces) == 0 && rm.Dir == "" {
					fmt.Fprintf(w, "Lab %s is down already.\n", lab)
					return
				}
				fmt.Fprintf(w, "Lab %s is down: %d machines stopped, %d namespaces removed", lab, rm.Machines, len(rm.Namespaces))
				if rm.Dir != "" {
					fmt.Fprintf(w, ", %s removed", rm.Dir)
				}
				fmt.Fprintln(w)
			})
		},
	}
	o.add(cmd)
	cmd.Flags().StringVar(&o.lab, "lab", "", "the lab's name (the spec's name), instead of -f")
	return cmd
}
