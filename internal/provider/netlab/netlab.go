package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/netplan"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/spec"
)

// Options configure a Provider.
type Options struct {
	// Lab names the lab; everything it builds carries Prefix(Lab).
	// Required.
	Lab string
	// Dir holds the state file, its lock, the machines' logs and the lab's
	// disks. Default DefaultDir(Lab).
	Dir string
	// Executable is what a boot command's "standby" runs.
	Executable string
	// Circuits and OnPremises are the circuits connections name and the
	// on-premises sites hosts belong to.
	Circuits   []spec.Circuit
	OnPremises []spec.OnPremises
	// Roles gives each site's role, "source" or "target" (default source):
	// on-premises prefers a source site's connection on equal prefixes.
	Roles map[string]string
	// Force connects a hub whose advertised prefixes overlap another
	// connection's on the same circuit, which Azure refuses (ER-04): both
	// are installed as multipath at the circuit and packets get lost.
	Force bool
	// StopGrace is how long a machine has after SIGTERM. Default 10s.
	StopGrace time.Duration
	// CircuitDelay is the one-way delay of each circuit link. Default 1ms.
	CircuitDelay time.Duration
	// Clock times checks and probes. Default clock.Real.
	Clock clock.Clock
}

// Provider is the netlab provider. It is safe for concurrent use, and
// several processes may use one lab: every change happens under the lab
// directory's lock.
type Provider struct {
	opts   Options
	prefix string
	spec   *spec.Spec // circuits and on-premises, for netplan

	mu     sync.Mutex
	reaped map[int]chan struct{} // machines this process started, by pid
}

var _ provider.Provider = (*Provider)(nil)

// New returns the provider of a lab. It builds nothing until asked.
func New(opts Options) (*Provider, error) {
	if opts.Lab == "" {
		return nil, fmt.Errorf("netlab: no lab name given: %w", provider.ErrInvalid)
	}
	if opts.Dir == "" {
		opts.Dir = DefaultDir(opts.Lab)
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 10 * time.Second
	}
	if opts.CircuitDelay <= 0 {
		opts.CircuitDelay = time.Millisecond
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: building network namespaces needs root; run as root, or use the local provider")
	}
	s := &spec.Spec{Name: opts.Lab, OnPremises: opts.OnPremises}
	yes := true
	for _, c := range opts.Circuits {
		if c.ProvisioningState == "" {
			c.ProvisioningState = "Provisioned"
		}
		if c.Enabled == nil {
			c.Enabled = &yes
		}
		s.Circuits = append(s.Circuits, c)
	}
	return &Provider{opts: opts, prefix: Prefix(opts.Lab), spec: s, reaped: map[int]chan struct{}{}}, nil
}

// Lab returns the lab's name.
func (p *Provider) Lab() string { return p.opts.Lab }

// Dir returns the lab directory.
func (p *Provider) Dir() string { return p.opts.Dir }

// ForSpec returns the options of the lab of a spec: named after it, with
// its circuits and on-premises sites, source sites preferred over the
// recovery site.
func ForSpec(s *spec.Spec) Options {
	o := Options{Lab: s.Name, Circuits: s.Circuits, OnPremises: s.OnPremises, Roles: map[string]string{}}
	top := netplan.Derive(s).Topology
	for _, site := range top.SourceSites {
		o.Roles[site] = "source"
	}
	if top.TargetSite != "" {
		o.Roles[top.TargetSite] = "target"
	}
	return o
}

// Prefer makes the on-premises routers prefer the connections of site on
// equal prefixes, as the customer does after a failover (AS-path prepend,
// local preference); "" restores the default, source sites first. The
// choice is kept in the lab's state, so every process sees it.
func (p *Provider) Prefer(ctx context.Context, site string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return p.withState(ctx, true, func(st *state) error {
		if st.Preferred == site {
			return nil
		}
		st.Preferred = site
		if err := p.reconcile(ctx, st); err != nil {
			return fmt.Errorf("netlab: prefer the connections of %q: %w", site, err)
		}
		return nil
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// List returns what exists, sorted by site, kind and name.
func (p *Provider) List(ctx context.Context, f provider.Filter) ([]provider.Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var items []provider.Item
	err := p.withState(ctx, false, func(st *state) error {
		for _, r := range st.Resources {
			if it := (provider.Item{Ref: r.Ref, Job: r.Job}); f.Match(it) {
				items = append(items, it)
			}
		}
		for _, m := range st.Machines {
			it := provider.Item{Ref: m.ref(), Job: m.Job, State: machineState(m)}
			var ips []string
			for _, a := range m.IPs {
				ips = append(ips, a.String())
			}
			it.Address = strings.Join(ips, ",")
			if f.Match(it) {
				items = append(items, it)
			}
		}
		return nil
	})
	slices.SortFunc(items, func(a, b provider.Item) int {
		if c := strings.Compare(a.Site, b.Site); c != 0 {
			return c
		}
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return items, err
}

// Namespace is one namespace of the lab and the node it is.
type Namespace struct {
	Name string `json:"name"`
	Node string `json:"node"`
}

// Namespaces lists the lab's namespaces as built, with their nodes, and
// any namespace carrying the lab's prefix that the state does not know
// (left by a crash; Down removes them).
func (p *Provider) Namespaces(ctx context.Context) ([]Namespace, error) {
	var out []Namespace
	err := p.withState(ctx, false, func(st *state) error {
		present, err := listNamespaces(p.prefix)
		if err != nil {
			return err
		}
		for _, ns := range present {
			node, ok := st.Namespaces[ns]
			if !ok {
				node = "(unknown: left over)"
			}
			out = append(out, Namespace{Name: ns, Node: node})
		}
		return nil
	})
	return out, err
}

// NodeNamespace returns the namespace of a node: "site/vm", "onprem/host",
// "site/appliance", "site/gateway", a circuit or an on-premises site (its
// router).
func (p *Provider) NodeNamespace(ctx context.Context, node string) (string, error) {
	var ns string
	err := p.withState(ctx, false, func(st *state) error {
		for n, name := range st.Namespaces {
			if name == node {
				ns = n
				return nil
			}
		}
		return fmt.Errorf("netlab: %s is no node of lab %s; see standby lab status: %w", node, p.opts.Lab, provider.ErrNotFound)
	})
	return ns, err
}
