package recovery

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/spec"
)

// Operations, as jobs name them.
const (
	OpDrill        = "drill"
	OpDrillCleanup = "drill-cleanup"
	OpFailover     = "failover"
	OpCommit       = "commit"
	OpReprotect    = "reprotect"
	OpFailback     = "failback"
	OpProvision    = "provision"
)

// Step actions beyond the runbook's network actions.
const (
	ActPinPoint    = "pin-point"
	ActUnpinPoint  = "unpin-point"
	ActFence       = "fence-replication"
	ActStopSource  = "stop-source-machines"
	ActFinalPoint  = "final-point"
	ActBootMachine = "boot-machines"
	ActStopMachine = "stop-machine"
	ActDeleteNet   = "delete-network"
	ActCreateNet   = "create-network"
	ActCommitPoint = "commit-point"
	ActReverse     = "reverse-sync"
	ActResume      = "resume-replication"
)

// Planner turns a spec's recovery plans into jobs. It is pure: a job is
// data, and every step carries in its params what its executor needs.
type Planner struct {
	Spec *spec.Spec
	Plan *netplan.Plan
}

// NewPlanner derives the network plan of s.
func NewPlanner(s *spec.Spec) *Planner { return &Planner{Spec: s, Plan: netplan.Derive(s)} }

// FailoverOptions choose how a failover runs.
type FailoverOptions struct {
	Planned bool
	// Point is latest (default), latest-app, a sequence number or an RFC
	// 3339 time (the newest point at or before it).
	Point string
}

// MachineParams is what boot-machines needs to start one VM.
type MachineParams struct {
	VM    string       `json:"vm"`
	Site  string       `json:"site"`
	Name  string       `json:"name"` // the machine's name at the site
	NICs  []spec.NIC   `json:"nics"`
	Boot  spec.Boot    `json:"boot"`
	Disks []string     `json:"disks"`
	Pin   string       `json:"pinStep"` // the pin-point step whose output names the point
	Check *CheckParams `json:"healthCheck,omitempty"`
	Test  bool         `json:"test,omitempty"`
	// Source: boot at the source site from the VM's own disks (failback).
	Source bool          `json:"source,omitempty"`
	Wait   spec.Duration `json:"wait"`
}

// BootParams are a boot-machines step's params.
type BootParams struct {
	Group    string          `json:"group"`
	Machines []MachineParams `json:"machines"`
}

// CheckParams are a run-check step's params.
type CheckParams struct {
	From    string        `json:"from"`
	HTTP    string        `json:"http,omitempty"`
	TCP     string        `json:"tcp,omitempty"`
	Timeout spec.Duration `json:"timeout"`
}

// PinParams select a VM's point.
type PinParams struct {
	VM    string `json:"vm"`
	Point string `json:"point"`
	Job   string `json:"job,omitempty"` // unpin: the job that pinned it
}

// NetParams name a network resource to create or delete.
type NetParams struct {
	Resource *provider.Resource `json:"resource,omitempty"`
	Ref      *provider.Ref      `json:"ref,omitempty"`
}

// VMParams name one machine.
type VMParams struct {
	VM   string `json:"vm"`
	Site string `json:"site"`
	Name string `json:"name"`
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("recovery: params do not encode: %v", err))
	}
	return b
}

func (pl *Planner) plan(name string) (*spec.Plan, error) {
	for i := range pl.Spec.Recovery.Plans {
		if pl.Spec.Recovery.Plans[i].Name == name {
			return &pl.Spec.Recovery.Plans[i], nil
		}
	}
	var names []string
	for _, p := range pl.Spec.Recovery.Plans {
		names = append(names, p.Name)
	}
	return nil, fmt.Errorf("recovery: no plan %q in the spec (plans: %s): %w", name, strings.Join(names, ", "), ErrInvalid)
}

// machine returns a VM's placement in the target or test network.
func (pl *Planner) placement(vm string, test bool) (netplan.Placement, []spec.NIC) {
	var first netplan.Placement
	var nics []spec.NIC
	for _, m := range pl.Plan.Machines {
		if m.VM != vm {
			continue
		}
		p := m.Target
		if test {
			p = m.Test
		}
		if len(nics) == 0 {
			first = p
		}
		nics = append(nics, spec.NIC{VirtualNetwork: p.VNet, Subnet: p.Subnet, IPAddress: spec.Addr{Addr: p.IP}})
	}
	return first, nics
}

func (pl *Planner) machineParams(vmName, pin string, test bool) (MachineParams, error) {
	vm := pl.Spec.VM(vmName)
	if vm == nil {
		return MachineParams{}, fmt.Errorf("recovery: no virtual machine %q: %w", vmName, ErrInvalid)
	}
	pos, nics := pl.placement(vmName, test)
	mp := MachineParams{VM: vm.Name, Site: pos.Site, Name: vm.Name, NICs: nics, Pin: pin, Test: test, Wait: spec.Duration{Duration: 2 * time.Minute}}
	if pos.Site == "" {
		mp.Site = pl.Spec.Recovery.TargetSite
	}
	if test {
		mp.Name = vm.Name + "-test"
	}
	if vm.Boot != nil {
		mp.Boot = *vm.Boot
	}
	for _, d := range vm.Disks {
		mp.Disks = append(mp.Disks, d.Name)
	}
	if hc := vm.HealthCheck; hc != nil && len(nics) > 0 {
		ip := nics[0].IPAddress.Addr
		c := &CheckParams{From: mp.Site + "/" + mp.Name, Timeout: spec.Duration{Duration: 2 * time.Minute}}
		if hc.HTTP != nil {
			c.HTTP = fmt.Sprintf("http://%s%s", netip.AddrPortFrom(ip, uint16(hc.HTTP.Port)), hc.HTTP.Path)
		} else if hc.TCP != nil {
			c.TCP = netip.AddrPortFrom(ip, uint16(hc.TCP.Port)).String()
		}
		mp.Check = c
	}
	return mp, nil
}

// pinSteps adds a pin-point step per VM of the plan.
func (pl *Planner) pinSteps(p *spec.Plan, point string, deps map[string][]string) ([]Step, map[string]string) {
	var steps []Step
	ids := map[string]string{}
	for _, g := range p.Groups {
		for _, vm := range g.VirtualMachines {
			id := "pin-point:" + vm
			ids[vm] = id
			steps = append(steps, Step{ID: id, Action: ActPinPoint, Resource: vm, Detail: "pin the " + point + " recovery point of " + vm, DependsOn: deps[vm], Params: mustJSON(PinParams{VM: vm, Point: point}), Retries: 2, Backoff: time.Second})
		}
	}
	return steps, ids
}

// Drill builds a test failover: pin each VM's latest point, build the
// isolated test network, boot overlays of the points there in group order,
// run each machine's health check and the plan's checks rewritten to the
// test addresses. Replication never stops.
func (pl *Planner) Drill(planName string) (Job, error) {
	p, err := pl.plan(planName)
	if err != nil {
		return Job{}, err
	}
	steps, pins := pl.pinSteps(p, "latest", nil)
	netSteps := pl.networkCreateSteps(pl.Plan.TestNetwork, "test")
	steps = append(steps, netSteps...)
	var netIDs []string
	for _, s := range netSteps {
		netIDs = append(netIDs, s.ID)
	}
	rewrite := pl.testAddresses()
	prev := netIDs
	for _, g := range p.Groups {
		bp := BootParams{Group: g.Name}
		deps := slices.Clone(prev)
		for _, vm := range g.VirtualMachines {
			mp, err := pl.machineParams(vm, pins[vm], true)
			if err != nil {
				return Job{}, err
			}
			bp.Machines = append(bp.Machines, mp)
			deps = append(deps, pins[vm])
		}
		boot := Step{ID: "boot:" + p.Name + "/" + g.Name, Action: ActBootMachine, Resource: p.Name + "/" + g.Name, Detail: "boot test copies of " + strings.Join(g.VirtualMachines, ", "), DependsOn: deps, Params: mustJSON(bp), Timeout: 5 * time.Minute}
		steps = append(steps, boot)
		next := []string{boot.ID}
		for i, a := range g.Post {
			if a.Check == nil {
				continue // a drill runs no operator steps or scripts of the real failover
			}
			c := checkParams(*a.Check)
			c.HTTP, c.TCP = rewriteTarget(c.HTTP, rewrite), rewriteTarget(c.TCP, rewrite)
			// The test network is isolated: the check runs from inside it,
			// from the group's first test machine.
			c.From = bp.Machines[0].Site + "/" + bp.Machines[0].Name
			id := fmt.Sprintf("check:%s/%s/post[%d]", p.Name, g.Name, i)
			steps = append(steps, Step{ID: id, Action: netplan.ActRunCheck, Resource: fmt.Sprintf("%s/%s/post[%d]", p.Name, g.Name, i), Detail: "from " + c.From + " " + c.HTTP + c.TCP, DependsOn: []string{boot.ID}, Params: mustJSON(c)})
			next = append(next, id)
		}
		prev = next
	}
	return Job{Operation: OpDrill, Plan: p.Name, Steps: steps}, nil
}

// DrillCleanup removes what a drill made: its test machines, its test
// network and its pins. The executor deletes by the drill job's tags, so a
// drill that died half way is cleaned up too.
func (pl *Planner) DrillCleanup(planName, drillJob string) (Job, error) {
	p, err := pl.plan(planName)
	if err != nil {
		return Job{}, err
	}
	if drillJob == "" {
		return Job{}, fmt.Errorf("recovery: drill cleanup of plan %s: no drill job to clean up: %w", planName, ErrInvalid)
	}
	steps := []Step{{ID: "cleanup:" + drillJob, Action: ActDeleteNet, Resource: drillJob, Detail: "stop the drill's machines and delete every resource tagged with job " + drillJob, Params: mustJSON(PinParams{Job: drillJob}), Retries: 3, Backoff: time.Second}}
	for _, g := range p.Groups {
		for _, vm := range g.VirtualMachines {
			steps = append(steps, Step{ID: "unpin-point:" + vm, Action: ActUnpinPoint, Resource: vm, Detail: "release the point the drill pinned", DependsOn: []string{steps[0].ID}, Params: mustJSON(PinParams{VM: vm, Job: drillJob})})
		}
	}
	return Job{Operation: OpDrillCleanup, Plan: p.Name, Steps: steps, Params: mustJSON(map[string]string{"drill": drillJob})}, nil
}

// Failover builds a planned or unplanned failover: the source is fenced
// (planned: its machines stop and a final point ships first), each VM's
// point is pinned, the runbook's network actions run (the before-failover
// ones are idempotent and cost nothing when already done), then the plan's
// groups boot in order at the target with their checks and manual steps.
func (pl *Planner) Failover(planName string, o FailoverOptions) (Job, error) {
	p, err := pl.plan(planName)
	if err != nil {
		return Job{}, err
	}
	point := o.Point
	if point == "" {
		point = "latest"
	}
	if o.Planned && point != "latest" {
		return Job{}, fmt.Errorf("recovery: a planned failover ships a final point and uses it; --point %s is for unplanned failovers: %w", point, ErrInvalid)
	}
	var steps []Step
	fenceDeps := map[string][]string{}
	for _, g := range p.Groups {
		for _, vm := range g.VirtualMachines {
			v := pl.Spec.VM(vm)
			if o.Planned {
				stop := Step{ID: "stop-source:" + vm, Action: ActStopSource, Resource: v.Site + "/" + vm, Detail: "stop " + vm + " at " + v.Site, Params: mustJSON(VMParams{VM: vm, Site: v.Site, Name: vm}), Retries: 2, Backoff: time.Second}
				final := Step{ID: "final-point:" + vm, Action: ActFinalPoint, Resource: vm, Detail: "ship and commit a final point of " + vm + " (zero data loss)", DependsOn: []string{stop.ID}, Params: mustJSON(VMParams{VM: vm, Site: v.Site, Name: vm}), Retries: 2, Backoff: time.Second, Timeout: 30 * time.Minute}
				steps = append(steps, stop, final)
				fenceDeps[vm] = []string{final.ID}
			} else {
				// The source may be down; if it is not, it must not keep
				// serving beside its recovered copy (split brain).
				stop := Step{ID: "stop-source:" + vm, Action: ActStopSource, Resource: v.Site + "/" + vm, Detail: "stop " + vm + " at " + v.Site + " if it still runs", Params: mustJSON(VMParams{VM: vm, Site: v.Site, Name: vm}), OnFailure: api.PolicyProceed, Timeout: time.Minute}
				fence := Step{ID: "fence:" + vm, Action: ActFence, Resource: vm, Detail: "stop replicating " + vm + " and keep it stopped (the source is failed over)", DependsOn: []string{stop.ID}, Params: mustJSON(VMParams{VM: vm, Site: v.Site, Name: vm})}
				steps = append(steps, stop, fence)
				fenceDeps[vm] = []string{fence.ID}
			}
		}
	}
	pinSteps, pins := pl.pinSteps(p, point, fenceDeps)
	steps = append(steps, pinSteps...)

	// The runbook, without the other plans' groups and the failback phase.
	var groupSteps = map[string]string{} // runbook failover-virtual-machines ID -> group
	for _, a := range pl.Plan.Runbook {
		if a.Phase == netplan.PhaseFailback {
			continue
		}
		if strings.Contains(a.Resource, "/") && isPlanAction(a) && !strings.HasPrefix(a.Resource, p.Name+"/") {
			continue
		}
		s := Step{ID: a.ID, Action: a.Action, Resource: a.Resource, Detail: a.Detail, DependsOn: slices.Clone(a.DependsOn), Manual: a.Action == netplan.ActManual, OnFailure: a.OnFailure, Retries: 3, Backoff: 2 * time.Second}
		switch a.Action {
		case netplan.ActFailoverVMs:
			g := groupOf(p, a.Resource)
			if g == nil {
				continue
			}
			bp := BootParams{Group: g.Name}
			for _, vm := range g.VirtualMachines {
				mp, err := pl.machineParams(vm, pins[vm], false)
				if err != nil {
					return Job{}, err
				}
				bp.Machines = append(bp.Machines, mp)
				s.DependsOn = append(s.DependsOn, pins[vm])
			}
			s.Action = ActBootMachine
			s.Params = mustJSON(bp)
			s.Timeout = 10 * time.Minute
			groupSteps[a.ID] = g.Name
		case netplan.ActRunCheck:
			c := pl.checkOf(p, a.Resource)
			if c == nil {
				continue
			}
			s.Params = mustJSON(c)
			s.Retries = 0
		default:
			keep, err := pl.plainStep(p, a, &s)
			if err != nil {
				return Job{}, err
			}
			if !keep {
				continue
			}
		}
		steps = append(steps, s)
	}
	pruneDeps(steps)
	params := map[string]any{"planned": o.Planned, "point": point}
	return Job{Operation: OpFailover, Plan: p.Name, Steps: steps, Params: mustJSON(params)}, nil
}

// Provision builds ahead of time what the runbook's before-failover phase
// holds (the target VNets, subnets, route tables, appliances, gateway,
// peerings and the connections that do not meet the live source), as the
// guidance recommends: the failover then waits for none of it.
func (pl *Planner) Provision() (Job, error) {
	var steps []Step
	for _, a := range pl.Plan.Runbook {
		if a.Phase != netplan.PhaseBefore {
			continue
		}
		np, err := pl.networkParams(a)
		if err != nil {
			return Job{}, err
		}
		steps = append(steps, Step{ID: a.ID, Action: a.Action, Resource: a.Resource, Detail: a.Detail, DependsOn: slices.Clone(a.DependsOn), OnFailure: a.OnFailure, Retries: 3, Backoff: 2 * time.Second, Params: mustJSON(np)})
	}
	return Job{Operation: OpProvision, Plan: "", Steps: steps}, nil
}

// Commit makes the failover's points final: pins are released.
func (pl *Planner) Commit(planName, failoverJob string) (Job, error) {
	p, err := pl.plan(planName)
	if err != nil {
		return Job{}, err
	}
	var steps []Step
	for _, g := range p.Groups {
		for _, vm := range g.VirtualMachines {
			steps = append(steps, Step{ID: "commit:" + vm, Action: ActCommitPoint, Resource: vm, Detail: "the recovered disks of " + vm + " become its disks; other points are released", Params: mustJSON(PinParams{VM: vm, Job: failoverJob})})
		}
	}
	return Job{Operation: OpCommit, Plan: p.Name, Steps: steps, Params: mustJSON(map[string]string{"failover": failoverJob})}, nil
}

// Reprotect replicates back: each surviving source disk is brought level
// with the disk its VM now runs from at the target, block hashes compared,
// only the differing blocks sent.
func (pl *Planner) Reprotect(planName string) (Job, error) {
	p, err := pl.plan(planName)
	if err != nil {
		return Job{}, err
	}
	var steps []Step
	for _, g := range p.Groups {
		for _, vm := range g.VirtualMachines {
			steps = append(steps, Step{ID: "reverse-sync:" + vm, Action: ActReverse, Resource: vm, Detail: "send " + vm + "'s changed blocks back to its source disks", Params: mustJSON(VMParams{VM: vm}), Retries: 2, Backoff: time.Second, Timeout: time.Hour})
		}
	}
	return Job{Operation: OpReprotect, Plan: p.Name, Steps: steps}, nil
}

// Failback is a planned failover back: the target machines stop, a final
// reverse copy loses nothing, the runbook's failback phase reconnects the
// source (for a single circuit, the target disconnects first), the groups
// boot at the source in order with their checks, and replication from the
// source resumes.
func (pl *Planner) Failback(planName string) (Job, error) {
	p, err := pl.plan(planName)
	if err != nil {
		return Job{}, err
	}
	var steps []Step
	var reversed []string
	target := pl.Spec.Recovery.TargetSite
	for _, g := range p.Groups {
		for _, vm := range g.VirtualMachines {
			stop := Step{ID: "stop-target:" + vm, Action: ActStopMachine, Resource: target + "/" + vm, Detail: "stop " + vm + " at " + target, Params: mustJSON(VMParams{VM: vm, Site: target, Name: vm}), Retries: 2, Backoff: time.Second}
			rev := Step{ID: "final-reverse-sync:" + vm, Action: ActReverse, Resource: vm, Detail: "send the last changed blocks of " + vm + " back (zero data loss)", DependsOn: []string{stop.ID}, Params: mustJSON(VMParams{VM: vm}), Retries: 2, Backoff: time.Second, Timeout: time.Hour}
			steps = append(steps, stop, rev)
			reversed = append(reversed, rev.ID)
		}
	}
	var lastChecks []string
	for _, a := range pl.Plan.Runbook {
		if a.Phase != netplan.PhaseFailback {
			continue
		}
		if isPlanAction(a) && !strings.HasPrefix(a.Resource, p.Name+"/") {
			continue
		}
		s := Step{ID: a.ID, Action: a.Action, Resource: a.Resource, Detail: a.Detail, DependsOn: slices.Clone(a.DependsOn), Manual: a.Action == netplan.ActManual, OnFailure: a.OnFailure, Retries: 3, Backoff: 2 * time.Second}
		if len(s.DependsOn) == 0 {
			s.DependsOn = slices.Clone(reversed)
		}
		switch a.Action {
		case netplan.ActFailoverVMs:
			g := groupOf(p, a.Resource)
			if g == nil {
				continue
			}
			bp := BootParams{Group: g.Name}
			for _, vm := range g.VirtualMachines {
				v := pl.Spec.VM(vm)
				mp, err := pl.machineParams(vm, "", false)
				if err != nil {
					return Job{}, err
				}
				mp.Site, mp.NICs, mp.Source = v.Site, v.NICs, true
				if mp.Check != nil {
					mp.Check.From = v.Site + "/" + vm
					if pl.Plan.Topology.Addressing == spec.AddressingTranslate {
						back := map[netip.Addr]netip.Addr{}
						for _, mm := range pl.Plan.Machines {
							back[mm.Target.IP] = mm.Source.IP
						}
						mp.Check.HTTP, mp.Check.TCP = rewriteTarget(mp.Check.HTTP, back), rewriteTarget(mp.Check.TCP, back)
					}
				}
				bp.Machines = append(bp.Machines, mp)
			}
			s.Action, s.Params, s.Timeout = ActBootMachine, mustJSON(bp), 10*time.Minute
		case netplan.ActRunCheck:
			a := actionOf(p, a.Resource)
			if a == nil || a.Check == nil {
				continue
			}
			s.Params, s.Retries = mustJSON(checkParams(*a.Check)), 0
			lastChecks = append(lastChecks, s.ID)
		default:
			keep, err := pl.plainStep(p, a, &s)
			if err != nil {
				return Job{}, err
			}
			if !keep {
				continue
			}
		}
		steps = append(steps, s)
	}
	pruneDeps(steps)
	for _, g := range p.Groups {
		for _, vm := range g.VirtualMachines {
			steps = append(steps, Step{ID: "resume-replication:" + vm, Action: ActResume, Resource: vm, Detail: "replicate " + vm + " from its source again", DependsOn: slices.Clone(lastChecks), Params: mustJSON(VMParams{VM: vm})})
		}
	}
	return Job{Operation: OpFailback, Plan: p.Name, Steps: steps}, nil
}

// plainStep fills the params of a runbook action that is neither a group's
// boot nor a check: a script, a manual step, or a network action. It
// reports false for a script the plan does not hold.
func (pl *Planner) plainStep(p *spec.Plan, a netplan.Action, s *Step) (bool, error) {
	switch a.Action {
	case netplan.ActRunScript:
		sc := pl.scriptOf(p, a.Resource)
		if sc == nil {
			return false, nil
		}
		s.Params, s.Timeout = mustJSON(sc), sc.Timeout.Duration
	case netplan.ActManual:
	default:
		np, err := pl.networkParams(a)
		if err != nil {
			return false, err
		}
		s.Params = mustJSON(np)
	}
	return true, nil
}

// pruneDeps drops dependencies on runbook actions a job left out (another
// plan's groups).
func pruneDeps(steps []Step) {
	have := map[string]bool{}
	for _, s := range steps {
		have[s.ID] = true
	}
	for i := range steps {
		steps[i].DependsOn = slices.DeleteFunc(steps[i].DependsOn, func(d string) bool { return !have[d] })
	}
}

func isPlanAction(a netplan.Action) bool {
	switch a.Action {
	case netplan.ActFailoverVMs, netplan.ActRunCheck, netplan.ActRunScript:
		return true
	case netplan.ActManual:
		return !strings.HasPrefix(a.Resource, "circuits/")
	}
	return false
}

func groupOf(p *spec.Plan, resource string) *spec.Group {
	for i := range p.Groups {
		if resource == p.Name+"/"+p.Groups[i].Name {
			return &p.Groups[i]
		}
	}
	return nil
}

// actionOf finds the plan action a runbook resource (plan/group/post[i])
// names.
func actionOf(p *spec.Plan, resource string) *spec.Action {
	for i := range p.Groups {
		g := &p.Groups[i]
		for _, list := range []struct {
			name string
			acts []spec.Action
		}{{"pre", g.Pre}, {"post", g.Post}} {
			for k := range list.acts {
				if resource == fmt.Sprintf("%s/%s/%s[%d]", p.Name, g.Name, list.name, k) {
					return &list.acts[k]
				}
			}
		}
	}
	return nil
}

func checkParams(c spec.Check) CheckParams {
	return CheckParams{From: c.From, HTTP: c.HTTP, TCP: c.TCP, Timeout: c.Timeout}
}

func (pl *Planner) checkOf(p *spec.Plan, resource string) *CheckParams {
	a := actionOf(p, resource)
	if a == nil || a.Check == nil {
		return nil
	}
	c := checkParams(*a.Check)
	// A check from a protected machine runs from where it now runs.
	if site, vm, ok := strings.Cut(c.From, "/"); ok {
		if v := pl.Spec.VM(vm); v != nil && v.Site == site {
			c.From = pl.Spec.Recovery.TargetSite + "/" + vm
		}
	}
	// With translated addressing, the check goes to the new address.
	if pl.Plan.Topology.Addressing == spec.AddressingTranslate {
		m := map[netip.Addr]netip.Addr{}
		for _, mm := range pl.Plan.Machines {
			m[mm.Source.IP] = mm.Target.IP
		}
		c.HTTP, c.TCP = rewriteTarget(c.HTTP, m), rewriteTarget(c.TCP, m)
	}
	return &c
}

// ScriptParams are a run-script step's params.
type ScriptParams struct {
	Command []string      `json:"command"`
	Timeout spec.Duration `json:"timeout"`
}

func (pl *Planner) scriptOf(p *spec.Plan, resource string) *ScriptParams {
	a := actionOf(p, resource)
	if a == nil || a.Script == nil {
		return nil
	}
	return &ScriptParams{Command: a.Script.Command, Timeout: a.Script.Timeout}
}

func (pl *Planner) testAddresses() map[netip.Addr]netip.Addr {
	m := map[netip.Addr]netip.Addr{}
	for _, mm := range pl.Plan.Machines {
		m[mm.Source.IP] = mm.Test.IP
	}
	return m
}

// rewriteTarget replaces the host of a URL or host:port through m.
func rewriteTarget(target string, m map[netip.Addr]netip.Addr) string {
	if target == "" {
		return ""
	}
	if u, err := url.Parse(target); err == nil && u.Host != "" {
		host, port := u.Hostname(), u.Port()
		if a, err := netip.ParseAddr(host); err == nil {
			if to, ok := m[a]; ok {
				u.Host = to.String()
				if port != "" {
					u.Host = netip.AddrPortFrom(to, parsePort(port)).String()
				}
				return u.String()
			}
		}
		return target
	}
	if ap, err := netip.ParseAddrPort(target); err == nil {
		if to, ok := m[ap.Addr()]; ok {
			return netip.AddrPortFrom(to, ap.Port()).String()
		}
	}
	return target
}

func parsePort(s string) uint16 {
	var n uint16
	for _, c := range s {
		n = n*10 + uint16(c-'0')
	}
	return n
}

// networkCreateSteps creates every resource of net (the test network),
// parents first: VNets, route tables, subnets, appliances, gateways,
// peerings, connections.
func (pl *Planner) networkCreateSteps(net *spec.Network, tag string) []Step {
	var steps []Step
	site := net.Site
	add := func(kind, name string, r provider.Resource, deps ...string) string {
		id := "create-" + tag + "-" + kind + ":" + site + "/" + name
		steps = append(steps, Step{ID: id, Action: ActCreateNet, Resource: site + "/" + name, Detail: "create " + kind + " " + name, DependsOn: deps, Params: mustJSON(NetParams{Resource: &r}), Retries: 3, Backoff: time.Second})
		return id
	}
	vnetIDs := map[string]string{}
	rtIDs := map[string]string{}
	for _, rt := range net.RouteTables {
		rt := rt
		rtIDs[rt.Name] = add("routeTable", rt.Name, provider.Resource{Site: site, RouteTable: &rt})
	}
	subnetIDs := map[string]string{}
	for _, v := range net.VirtualNetworks {
		bare := v
		bare.Subnets = nil
		vnetIDs[v.Name] = add("virtualNetwork", v.Name, provider.Resource{Site: site, VirtualNetwork: &bare})
		for _, sn := range v.Subnets {
			deps := []string{vnetIDs[v.Name]}
			if sn.RouteTable != "" {
				deps = append(deps, rtIDs[sn.RouteTable])
			}
			subnetIDs[v.Name+"/"+sn.Name] = add("subnet", v.Name+"/"+sn.Name, provider.Resource{Site: site, Subnet: &provider.Subnet{VirtualNetwork: v.Name, Subnet: sn}}, deps...)
		}
	}
	for _, a := range net.Appliances {
		a := a
		add("appliance", a.Name, provider.Resource{Site: site, Appliance: &a}, subnetIDs[a.VirtualNetwork+"/"+a.Subnet])
	}
	gwIDs := map[string]string{}
	for _, g := range net.Gateways {
		g := g
		gwIDs[g.Name] = add("gateway", g.Name, provider.Resource{Site: site, Gateway: &g}, subnetIDs[g.VirtualNetwork+"/GatewaySubnet"])
	}
	var last string
	for _, pe := range net.Peerings {
		pe := pe
		deps := []string{vnetIDs[pe.From], vnetIDs[pe.To]}
		if last != "" {
			deps = append(deps, last) // one peering operation at a time
		}
		last = add("peering", pe.From+"/"+pe.Name, provider.Resource{Site: site, Peering: &pe}, deps...)
	}
	for _, c := range net.Connections {
		c := c
		add("connection", c.Name, provider.Resource{Site: site, Connection: &c}, gwIDs[c.Gateway])
	}
	for i := range steps {
		steps[i].DependsOn = slices.DeleteFunc(steps[i].DependsOn, func(d string) bool { return d == "" })
	}
	return steps
}

// networkParams resolves a runbook network action to the resource it
// creates or the reference it deletes.
func (pl *Planner) networkParams(a netplan.Action) (NetParams, error) {
	site, rest, _ := strings.Cut(a.Resource, "/")
	var net *spec.Network
	if site == pl.Plan.Target.Site {
		net = pl.Plan.Target
	} else {
		net = pl.Spec.Network(site)
	}
	if net == nil {
		return NetParams{}, fmt.Errorf("recovery: runbook action %s: no network at site %s", a.ID, site)
	}
	fail := func() (NetParams, error) {
		return NetParams{}, fmt.Errorf("recovery: runbook action %s: %s is not in the plan's networks", a.ID, a.Resource)
	}
	switch a.Action {
	case netplan.ActCreateVNet:
		for _, v := range net.VirtualNetworks {
			if v.Name == rest {
				v.Subnets = nil
				return NetParams{Resource: &provider.Resource{Site: site, VirtualNetwork: &v}}, nil
			}
		}
	case netplan.ActCreateSubnet, netplan.ActAssociateRT:
		vnet, sub, _ := strings.Cut(rest, "/subnets/")
		for _, v := range net.VirtualNetworks {
			if v.Name != vnet {
				continue
			}
			for _, sn := range v.Subnets {
				if sn.Name == sub {
					if a.Action == netplan.ActCreateSubnet {
						sn.RouteTable = ""
					}
					return NetParams{Resource: &provider.Resource{Site: site, Subnet: &provider.Subnet{VirtualNetwork: vnet, Subnet: sn}}}, nil
				}
			}
		}
	case netplan.ActCreateRT:
		name := strings.TrimPrefix(rest, "routeTables/")
		for _, rt := range net.RouteTables {
			if rt.Name == name {
				return NetParams{Resource: &provider.Resource{Site: site, RouteTable: &rt}}, nil
			}
		}
	case netplan.ActCreateAppliance:
		for _, ap := range net.Appliances {
			if ap.Name == rest {
				return NetParams{Resource: &provider.Resource{Site: site, Appliance: &ap}}, nil
			}
		}
	case netplan.ActCreateGateway:
		for _, g := range net.Gateways {
			if g.Name == rest {
				return NetParams{Resource: &provider.Resource{Site: site, Gateway: &g}}, nil
			}
		}
	case netplan.ActCreatePeering:
		vnet, name, _ := strings.Cut(rest, "/peerings/")
		for _, pe := range net.Peerings {
			if pe.From == vnet && pe.Name == name {
				return NetParams{Resource: &provider.Resource{Site: site, Peering: &pe}}, nil
			}
		}
	case netplan.ActCreateConn:
		name := strings.TrimPrefix(rest, "connections/")
		for _, c := range net.Connections {
			if c.Name == name {
				return NetParams{Resource: &provider.Resource{Site: site, Connection: &c}}, nil
			}
		}
	case netplan.ActDeleteConn:
		name := strings.TrimPrefix(rest, "connections/")
		return NetParams{Ref: &provider.Ref{Site: site, Kind: provider.KindConnection, Name: name}}, nil
	default:
		return NetParams{}, fmt.Errorf("recovery: runbook action %s: unknown action %s", a.ID, a.Action)
	}
	return fail()
}
