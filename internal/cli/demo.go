package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/examples"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/spec"
)

type demoOpts struct {
	keep bool
}

func newDemoCmd(e *env) *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Walk through standby on the embedded quickstart spec",
		Long: `Writes the embedded quickstart spec (examples/local-quickstart.yaml) to a
temporary directory and walks through it: checks the recovery network design,
derives the recovery region's networks and the runbook, and traces a request
from the on-premises client to the application before failover, during a drill,
during the switch and after failover. Nothing outside the temporary directory
is touched.`,
		Example: `  go run ./cmd/standby demo
  standby demo -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runDemo(cmd.Context(), e, o) },
	}
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	return cmd
}

// DemoResult is what the demo found, for -o json.
type DemoResult struct {
	Dir      string            `json:"dir"`
	Spec     string            `json:"spec"`
	Findings []netplan.Finding `json:"findings"`
	Topology netplan.Topology  `json:"topology"`
	Estimate netplan.Estimate  `json:"estimate"`
	Actions  int               `json:"runbookActions"`
	Traces   []*netplan.Trace  `json:"traces"`
}

func runDemo(_ context.Context, e *env, o demoOpts) error {
	dir, err := os.MkdirTemp("", "standby-demo-")
	if err != nil {
		return fmt.Errorf("demo: make a temporary directory: %w", err)
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	data, err := examples.Files.ReadFile(examples.Quickstart)
	if err != nil {
		return fmt.Errorf("demo: read the embedded spec: %w", err)
	}
	file := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return fmt.Errorf("demo: write %s: %w", file, err)
	}
	s, err := spec.Load(file)
	if err != nil {
		return err
	}
	p := netplan.Derive(s)
	res := DemoResult{Dir: dir, Spec: file, Findings: netplan.Check(p), Topology: p.Topology, Estimate: p.Estimate, Actions: len(p.Runbook)}
	if res.Findings == nil {
		res.Findings = []netplan.Finding{}
	}
	client := "hq/client"
	app := netip.MustParseAddr("10.1.0.4")
	var testIP netip.Addr
	for _, m := range p.Machines {
		if m.Source.IP == app {
			testIP = m.Test.IP
		}
	}
	for _, step := range []struct {
		state string
		to    netip.Addr
	}{{netplan.StateSource, app}, {netplan.StateTest, testIP}, {netplan.StateFailover, app}, {netplan.StateTarget, app}} {
		t, err := p.Trace(step.state, client, step.to)
		if err != nil {
			return fmt.Errorf("demo: trace: %w", err)
		}
		res.Traces = append(res.Traces, t)
	}
	return e.render(res, func(w io.Writer) { printDemo(w, s, p, res) })
}

func printDemo(w io.Writer, s *spec.Spec, p *netplan.Plan, res DemoResult) {
	fmt.Fprintf(w, "standby demo: %s, in %s\n\n", s.Name, res.Dir)
	fmt.Fprintf(w, "1. The setup. %d machines at %s are protected; the recovery site is %s.\n", len(s.Protection.VirtualMachines), s.Protection.VirtualMachines[0].Site, s.Recovery.TargetSite)
	fmt.Fprintf(w, "   On-premises reaches them over %s; after failover over %s.\n\n", join(p.Topology.SourceCircuits), join(p.Topology.TargetCircuits))
	counts := map[string]int{}
	for _, f := range res.Findings {
		counts[f.Severity]++
	}
	fmt.Fprintf(w, "2. Check the design (standby net check): %s, %s, %s.\n", plural(counts["error"], "error"), plural(counts["warning"], "warning"), plural(counts["info"], "note"))
	for _, f := range res.Findings {
		fmt.Fprintf(w, "   %-7s %s %s\n", f.Severity, f.Rule, f.Message)
	}
	fmt.Fprintf(w, "\n3. Plan the recovery network (standby net plan): %s topology, %s addressing.\n", p.Topology.Kind, p.Topology.Addressing)
	fmt.Fprintf(w, "   %s, %s, %s, %s, %s; a %d-action runbook.\n", plural(len(p.Target.VirtualNetworks), "target VNet"), plural(len(p.Target.RouteTables), "route table"), plural(len(p.Target.Appliances), "appliance"), plural(len(p.Target.Gateways), "gateway"), plural(len(p.Target.Peerings), "peering"), res.Actions)
	fmt.Fprintf(w, "   Built ahead of time: %s (the gateway alone takes 45 minutes); the failover itself: %s.\n\n", res.Estimate.BeforeFailover, res.Estimate.Failover)
	titles := map[string]string{
		netplan.StateSource:   "before failover",
		netplan.StateTest:     "during a drill, to the test copy",
		netplan.StateFailover: "during the switch",
		netplan.StateTarget:   "after failover",
	}
	fmt.Fprintf(w, "4. Where does a request from hq/client go? (standby net trace)\n")
	for _, t := range res.Traces {
		path := ""
		for i, h := range t.Hops {
			if i > 0 {
				path += " > "
			}
			path += h.Node
		}
		if n := len(t.Hops); n > 0 && t.Result == netplan.Delivered {
			path += " > " + t.Hops[n-1].NextHop
		}
		fmt.Fprintf(w, "   %-34s to %-11s %-9s %s\n", titles[t.State], t.To, t.Result, path)
		if t.Result != netplan.Delivered {
			fmt.Fprintf(w, "   %34s %s\n", "", t.Reason)
		}
	}
	fmt.Fprintf(w, "\nNext: `standby net plan -f examples/%s` prints the whole runbook, and\n`standby net trace` follows any packet in any state. (--keep keeps %s.)\n", examples.Quickstart, res.Dir)
}

func join(xs []string) string {
	if len(xs) == 0 {
		return "no circuit"
	}
	out := xs[0]
	for _, x := range xs[1:] {
		out += ", " + x
	}
	return out
}
