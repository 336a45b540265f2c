package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/spec"
)

func newNetCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "net",
		Short: "Check, plan and trace the recovery network of a DR spec",
		Long: `The network analyser. It reads a DR spec and, without touching anything:
  check  runs the rules of Azure and Site Recovery against source, target and test networks
  plan   derives the failover topology, the target and test networks, the map and the runbook
  trace  follows a packet hop by hop in the source, target, test or failover state`,
		RunE: groupRunE,
	}
	cmd.AddCommand(newNetCheckCmd(e), newNetPlanCmd(e), newNetTraceCmd(e))
	return cmd
}

// loadPlan loads a spec and derives its plan; errors are bad input.
func loadPlan(file string) (*netplan.Plan, error) {
	if file == "" {
		return nil, badInputf("-f SPEC is required: the DR spec to read (see examples/)")
	}
	s, err := spec.Load(file)
	if err != nil {
		return nil, err
	}
	return netplan.Derive(s), nil
}

type netCheckOpts struct{ file string }

func newNetCheckCmd(e *env) *cobra.Command {
	var o netCheckOpts
	cmd := &cobra.Command{
		Use:   "check -f SPEC",
		Short: "Check a recovery network design against what Azure allows",
		Long: `Runs every rule (ER, GW, PE, RT, AS) against the source networks, the generated
target and test networks and the failover window. Exits 1 when any finding is an error.`,
		Example: `  standby net check -f examples/hub-spoke-two-circuits.yaml
  standby net check -f spec.yaml -o json | jq '.findings[] | select(.severity=="error")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runNetCheck(cmd.Context(), e, o) },
	}
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "DR spec file (YAML)")
	return cmd
}

// CheckResult is the output of net check.
type CheckResult struct {
	Spec     string            `json:"spec"`
	Summary  map[string]int    `json:"summary"`
	Findings []netplan.Finding `json:"findings"`
}

func runNetCheck(_ context.Context, e *env, o netCheckOpts) error {
	p, err := loadPlan(o.file)
	if err != nil {
		return err
	}
	res := CheckResult{Spec: o.file, Summary: map[string]int{"error": 0, "warning": 0, "info": 0}, Findings: netplan.Check(p)}
	if res.Findings == nil {
		res.Findings = []netplan.Finding{}
	}
	for _, f := range res.Findings {
		res.Summary[f.Severity]++
	}
	if err := e.render(res, func(w io.Writer) { printFindings(w, p.Spec().Name, res) }); err != nil {
		return err
	}
	if netplan.HasErrors(res.Findings) {
		return errFailed
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func printFindings(w io.Writer, name string, res CheckResult) {
	fmt.Fprintf(w, "%s (%s): %s, %s, %s\n", name, res.Spec, plural(res.Summary["error"], "error"), plural(res.Summary["warning"], "warning"), plural(res.Summary["info"], "note"))
	titles := map[string]string{"error": "Errors: Azure would refuse this, or the failover cannot work", "warning": "Warnings: a risk to recovery time, correctness or resilience", "info": "Notes"}
	for _, sev := range []string{"error", "warning", "info"} {
		first := true
		for _, f := range res.Findings {
			if f.Severity != sev {
				continue
			}
			if first {
				fmt.Fprintf(w, "\n%s\n", titles[sev])
				first = false
			}
			fmt.Fprintf(w, "  %-6s [%s] %s\n", f.Rule, f.Scope, f.Resource)
			fmt.Fprint(w, wrap(f.Message, "         ", 100))
			if f.Hint != "" {
				fmt.Fprint(w, wrap("fix: "+f.Hint, "         ", 100))
			}
		}
	}
	if len(res.Findings) == 0 {
		fmt.Fprintln(w, "\nNo findings: the design passes every rule.")
	}
}

type netPlanOpts struct{ file string }

func newNetPlanCmd(e *env) *cobra.Command {
	var o netPlanOpts
	cmd := &cobra.Command{
		Use:   "plan -f SPEC",
		Short: "Derive the target networks, the two-way map and the failover runbook",
		Long: `Derives the failover topology (single circuit, or two circuits at one or two
peering locations; same or translated addressing), generates the recovery site's
networks (VNets, subnets with GatewaySubnet, route tables, appliances, peerings
with the source flags, gateway, connections), the isolated test network carved
from the pool, where every NIC lands, and the ordered runbook with its phases,
dependencies and a recovery-time estimate.`,
		Example: `  standby net plan -f examples/hub-spoke-two-circuits.yaml
  standby net plan -f examples/single-circuit-same-ip.yaml -o json | jq '.runbook[] | select(.phase=="failover")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runNetPlan(cmd.Context(), e, o) },
	}
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "DR spec file (YAML)")
	return cmd
}

func runNetPlan(_ context.Context, e *env, o netPlanOpts) error {
	p, err := loadPlan(o.file)
	if err != nil {
		return err
	}
	return e.render(p, func(w io.Writer) { printPlan(w, p) })
}

func printPlan(w io.Writer, p *netplan.Plan) {
	t := p.Topology
	fmt.Fprintf(w, "Topology: %s, %s addressing, %s -> %s\n", t.Kind, t.Addressing, strings.Join(t.SourceSites, ","), t.TargetSite)
	fmt.Fprintf(w, "  circuits: source %s, target %s", strings.Join(t.SourceCircuits, ","), strings.Join(t.TargetCircuits, ","))
	if t.CrossGeography {
		fmt.Fprint(w, " (target circuit outside the target region's geopolitical area)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  hub: %s -> %s; target networks built before failover: %v\n", t.SourceHub, t.TargetHub, t.Provisioned)

	fmt.Fprintf(w, "\nTarget networks at %s\n", p.Target.Site)
	for _, v := range p.Target.VirtualNetworks {
		fmt.Fprintf(w, "  %s %s\n", v.Name, specPrefixes(v.AddressSpace))
		for _, s := range v.Subnets {
			rt := ""
			if s.RouteTable != "" {
				rt = "  route table " + s.RouteTable
			}
			fmt.Fprintf(w, "    %-16s %s%s\n", s.Name, s.AddressPrefix, rt)
		}
	}
	for _, rt := range p.Target.RouteTables {
		fmt.Fprintf(w, "  route table %s (BGP propagation %s)\n", rt.Name, onOff(!rt.DisableBgpRoutePropagation))
		for _, r := range rt.Routes {
			nh := r.NextHopType
			if r.NextHopIPAddress.IsValid() {
				nh += " " + r.NextHopIPAddress.String()
			}
			fmt.Fprintf(w, "    %-16s %-18s -> %s\n", r.Name, r.AddressPrefix, nh)
		}
	}
	for _, a := range p.Target.Appliances {
		fmt.Fprintf(w, "  appliance %s %s in %s/%s\n", a.Name, a.IPAddress, a.VirtualNetwork, a.Subnet)
	}
	for _, g := range p.Target.Gateways {
		fmt.Fprintf(w, "  gateway %s (%s %s) in %s\n", g.Name, g.Type, g.Sku, g.VirtualNetwork)
	}
	for _, c := range p.Target.Connections {
		fmt.Fprintf(w, "  connection %s: %s -> circuit %s (weight %d)\n", c.Name, c.Gateway, c.Circuit, c.RoutingWeight)
	}
	for _, pe := range p.Target.Peerings {
		fmt.Fprintf(w, "  peering %s: %s -> %s%s\n", pe.Name, pe.From, pe.To, peeringFlags(pe))
	}

	fmt.Fprintf(w, "\nTest network at %s (isolated)\n", p.TestNetwork.Site)
	for _, v := range p.TestNetwork.VirtualNetworks {
		fmt.Fprintf(w, "  %s %s\n", v.Name, specPrefixes(v.AddressSpace))
	}

	fmt.Fprintf(w, "\nMachines (source -> target, test)\n")
	for _, m := range p.Machines {
		fmt.Fprintf(w, "  %-8s %s/%s %s -> %s/%s %s, test %s/%s %s\n", m.VM, m.Source.VNet, m.Source.Subnet, m.Source.IP, m.Target.VNet, m.Target.Subnet, m.Target.IP, m.Test.VNet, m.Test.Subnet, m.Test.IP)
	}

	fmt.Fprintf(w, "\nMap (failover: source -> target; failback: the reverse)\n")
	for _, m := range p.Mapping {
		extra := ""
		if m.SourcePrefix != "" || m.TargetPrefix != "" {
			extra = fmt.Sprintf("  %s -> %s", m.SourcePrefix, m.TargetPrefix)
		}
		fmt.Fprintf(w, "  %-16s %s -> %s (%s)%s\n", m.Kind, m.Source, m.Target, m.Status, extra)
	}

	fmt.Fprintf(w, "\nRunbook\n")
	phase := ""
	num := map[string]int{}
	for i, a := range p.Runbook {
		num[a.ID] = i + 1
		if a.Phase != phase {
			phase = a.Phase
			fmt.Fprintf(w, "  %s\n", phase)
		}
		var deps []string
		for _, d := range a.DependsOn {
			deps = append(deps, fmt.Sprint(num[d]))
		}
		after := ""
		if len(deps) > 0 {
			after = "  after " + strings.Join(deps, ",")
		}
		fmt.Fprintf(w, "  %3d. %-26s %s%s\n", i+1, a.Action, a.Resource, after)
		if a.Detail != "" {
			fmt.Fprintf(w, "       %s\n", a.Detail)
		}
		if a.OnFailure != "" {
			fmt.Fprintf(w, "       on failure: %s\n", a.OnFailure)
		}
	}
	es := p.Estimate
	fmt.Fprintf(w, "\nEstimated duration: before failover %s, failover %s, after failover %s, failback %s\n", es.BeforeFailover, es.Failover, es.AfterFailover, es.Failback)
	if len(p.Problems) > 0 {
		fmt.Fprintf(w, "\n%s while generating; run `standby net check` for details.\n", plural(len(p.Problems), "problem"))
	}
}

func specPrefixes(ps []spec.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func peeringFlags(p spec.Peering) string {
	var f []string
	if p.AllowVirtualNetworkAccess {
		f = append(f, "access")
	}
	if p.AllowForwardedTraffic {
		f = append(f, "forwarded")
	}
	if p.AllowGatewayTransit {
		f = append(f, "gateway-transit")
	}
	if p.UseRemoteGateways {
		f = append(f, "remote-gateways")
	}
	if len(f) == 0 {
		return ""
	}
	return " [" + strings.Join(f, ", ") + "]"
}

type netTraceOpts struct {
	file, from, to, state string
}

func newNetTraceCmd(e *env) *cobra.Command {
	var o netTraceOpts
	cmd := &cobra.Command{
		Use:   "trace -f SPEC --from HOST --to IP [--state source|target|test|failover]",
		Short: "Follow a packet hop by hop before, during and after failover",
		Long: `Follows one packet from an on-premises host (onprem/host), a protected machine
(site/vm, named by its source site in every state) or an IP, to an IP. At each hop
it picks the route Azure would (longest prefix; a user route beats BGP, BGP beats
system routes, except the VNet's own and peered spaces) and ends delivered or
dropped with the reason. Exits 1 when the packet is dropped.

States: source (before failover), failover (the switch window: source fenced,
failover-phase network actions not yet done), target (after failover), test (a
drill: the isolated test network beside the live source).`,
		Example: `  standby net trace -f examples/hub-spoke-two-circuits.yaml --from hq/client --to 10.1.0.4
  standby net trace -f examples/hub-spoke-two-circuits.yaml --from hq/client --to 10.1.0.4 --state target
  standby net trace -f examples/hub-spoke-two-circuits.yaml --from eastasia/app1 --to 10.2.0.4 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runNetTrace(cmd.Context(), e, o) },
	}
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "DR spec file (YAML)")
	cmd.Flags().StringVar(&o.from, "from", "", "where the packet starts: onprem/host, site/vm, or an IP")
	cmd.Flags().StringVar(&o.to, "to", "", "destination IP address")
	cmd.Flags().StringVar(&o.state, "state", netplan.StateSource, "network state: source, target, test or failover")
	return cmd
}

func runNetTrace(_ context.Context, e *env, o netTraceOpts) error {
	if o.from == "" || o.to == "" {
		return badInputf("--from and --to are required (for example --from hq/client --to 10.1.0.4)")
	}
	dst, err := netip.ParseAddr(o.to)
	if err != nil {
		return badInputf("--to %q: not an IP address", o.to)
	}
	p, err := loadPlan(o.file)
	if err != nil {
		return err
	}
	t, err := p.Trace(o.state, o.from, dst)
	if err != nil {
		return badInput(fmt.Errorf("trace: %w", err))
	}
	if err := e.render(t, func(w io.Writer) { printTrace(w, t) }); err != nil {
		return err
	}
	if t.Result != netplan.Delivered {
		return errFailed
	}
	return nil
}

func printTrace(w io.Writer, t *netplan.Trace) {
	fmt.Fprintf(w, "Trace %s -> %s in the %s state\n", t.From, t.To, t.State)
	for i, h := range t.Hops {
		fmt.Fprintf(w, "  %2d  %s\n      route %s\n      next  %s\n", i+1, h.Node, h.Route, h.NextHop)
	}
	fmt.Fprintf(w, "%s: %s\n", strings.ToUpper(t.Result), t.Reason)
}

// wrap folds text at word boundaries to width columns, each line indented.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}
