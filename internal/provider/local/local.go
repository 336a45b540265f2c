package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/provider"
)

// Options configure a Provider.
type Options struct {
	// Dir holds the state file, the lock and each machine's working
	// directory and console log. Required.
	Dir string
	// Executable is what a boot command's "standby" runs: the path of the
	// running standby binary.
	Executable string
	// Lab salts the loopback addresses, so that two labs on one machine
	// (two daemons, two tests) do not pick the same ones.
	Lab string
	// StopGrace is how long a machine has to exit after SIGTERM before it
	// gets SIGKILL. Default 10s.
	StopGrace time.Duration
	// Clock times the checks. Default clock.Real.
	Clock clock.Clock
}

// Provider is the local provider. It is safe for concurrent use; one
// directory is used by one Provider at a time (a lock file says so).
type Provider struct {
	opts Options
	lock *os.File

	mu    sync.Mutex
	res   map[provider.Ref]*resource
	vms   map[provider.Ref]*machine
	addrs map[siteIP]netip.Addr
	taken map[netip.Addr]siteIP
}

var _ provider.Provider = (*Provider)(nil)

// resource is a modelled network resource.
type resource struct {
	Ref provider.Ref    `json:"ref"`
	Job string          `json:"job"`
	Def json.RawMessage `json:"def"`
}

// siteIP is what a loopback address is given to: a static IP at a site
// (Key is the IP), or a NIC without one (Key is "vm#nic").
type siteIP struct {
	Site string `json:"site"`
	Key  string `json:"key"`
}

// stateFile is the JSON kept in Dir/state.json.
type stateFile struct {
	Version   int         `json:"version"`
	Resources []*resource `json:"resources"`
	Machines  []*machine  `json:"machines"`
	Addresses []addrEntry `json:"addresses"`
}

type addrEntry struct {
	siteIP
	Loopback netip.Addr `json:"loopback"`
}

const stateVersion = 1

// New opens the provider's directory, loads its state and adopts the
// machines still running from an earlier run.
func New(opts Options) (*Provider, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("local: no state directory given: %w", provider.ErrInvalid)
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 10 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("local: create state directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(opts.Dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("local: open lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("local: state directory %s is in use by another standby process; stop it or use another directory: %w", opts.Dir, err)
	}
	p := &Provider{
		opts: opts, lock: lock,
		res: map[provider.Ref]*resource{}, vms: map[provider.Ref]*machine{},
		addrs: map[siteIP]netip.Addr{}, taken: map[netip.Addr]siteIP{},
	}
	if err := p.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return p, nil
}

// Close releases the directory. Machines keep running; a later New adopts
// them.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lock == nil {
		return nil
	}
	err := p.lock.Close()
	p.lock = nil
	return err
}

func (p *Provider) statePath() string { return filepath.Join(p.opts.Dir, "state.json") }

func (p *Provider) load() error {
	b, err := os.ReadFile(p.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local: read state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("local: state file %s is damaged: %w; remove it after stopping the processes it lists", p.statePath(), err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("local: state file %s has version %d; this build reads %d", p.statePath(), st.Version, stateVersion)
	}
	for _, r := range st.Resources {
		p.res[r.Ref] = r
	}
	for _, a := range st.Addresses {
		p.addrs[a.siteIP] = a.Loopback
		p.taken[a.Loopback] = a.siteIP
	}
	for _, m := range st.Machines {
		m.adopt()
		p.vms[m.ref()] = m
	}
	return nil
}

// save writes the state file atomically; the caller holds mu.
func (p *Provider) save() error {
	st := stateFile{Version: stateVersion}
	for _, r := range p.res {
		st.Resources = append(st.Resources, r)
	}
	slices.SortFunc(st.Resources, func(a, b *resource) int { return strings.Compare(a.Ref.String(), b.Ref.String()) })
	for _, m := range p.vms {
		st.Machines = append(st.Machines, m)
	}
	slices.SortFunc(st.Machines, func(a, b *machine) int { return strings.Compare(a.ref().String(), b.ref().String()) })
	for k, v := range p.addrs {
		st.Addresses = append(st.Addresses, addrEntry{k, v})
	}
	slices.SortFunc(st.Addresses, func(a, b addrEntry) int { return a.Loopback.Compare(b.Loopback) })
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("local: encode state: %w", err)
	}
	tmp := p.statePath() + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("local: write state: %w", err)
	}
	if _, err := f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p.statePath())
	}
	if err != nil {
		return fmt.Errorf("local: write state: %w", err)
	}
	if d, err := os.Open(p.opts.Dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// List returns what exists, sorted by site, kind and name.
func (p *Provider) List(ctx context.Context, f provider.Filter) ([]provider.Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var items []provider.Item
	for _, r := range p.res {
		it := provider.Item{Ref: r.Ref, Job: r.Job}
		if f.Match(it) {
			items = append(items, it)
		}
	}
	for _, m := range p.vms {
		it := provider.Item{Ref: m.ref(), Job: m.Job, State: m.state()}
		var addrs []string
		for _, ip := range m.Loopback {
			addrs = append(addrs, ip.String())
		}
		it.Address = strings.Join(addrs, ",")
		if f.Match(it) {
			items = append(items, it)
		}
	}
	slices.SortFunc(items, func(a, b provider.Item) int {
		return cmpRefs(a.Ref, b.Ref)
	})
	return items, nil
}

func cmpRefs(a, b provider.Ref) int {
	if c := strings.Compare(a.Site, b.Site); c != 0 {
		return c
	}
	if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}
