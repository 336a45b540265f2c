package local

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/procgroup"
	"github.com/standby-dr/standby/internal/spec"
)

// machine is a running (or exited) machine: a process group.
type machine struct {
	Site string          `json:"site"`
	Name string          `json:"name"`
	Job  string          `json:"job"`
	Def  json.RawMessage `json:"def"`
	// PID is the main process, also the process group id; Ticks is its
	// start time in /proc, which tells it from a later process given the
	// same pid.
	PID        int          `json:"pid"`
	Ticks      uint64       `json:"startTicks"`
	Keys       []siteIP     `json:"keys"`
	Loopback   []netip.Addr `json:"loopback"`
	IPs        []netip.Addr `json:"ips"`
	Exited     bool         `json:"exited"`
	ExitStatus string       `json:"exitStatus,omitempty"`

	// done is closed once a child of this provider is reaped; nil for a
	// machine adopted from an earlier run.
	done chan struct{}
}

func (m *machine) ref() provider.Ref {
	return provider.Ref{Site: m.Site, Kind: provider.KindVM, Name: m.Name}
}

// vmDef is what makes two starts of a machine the same.
type vmDef struct {
	NICs  []spec.NIC      `json:"nics"`
	Disks []provider.Disk `json:"disks"`
	Boot  spec.Boot       `json:"boot"`
}

// state reports "running" or "exited"; the caller holds mu.
func (m *machine) state() string {
	if !m.Exited && m.done == nil {
		m.adopt()
	}
	if m.Exited {
		return "exited"
	}
	return "running"
}

// adopt marks a machine of an earlier run exited unless its main process
// still runs.
func (m *machine) adopt() {
	if m.Exited {
		return
	}
	if !m.group().Running() {
		m.Exited = true
		m.ExitStatus = "exited while no provider watched"
	}
}

// StartVM runs vm's boot command as a process group bound to its loopback
// addresses.
func (p *Provider) StartVM(ctx context.Context, job string, vm provider.VM) error {
	ref := vm.Ref()
	switch {
	case job == "":
		return fmt.Errorf("local: start %s: no job tag: %w", ref, provider.ErrInvalid)
	case vm.Site == "" || vm.Name == "":
		return fmt.Errorf("local: start %s: site and name are required: %w", ref, provider.ErrInvalid)
	case len(vm.Boot.Command) == 0:
		return fmt.Errorf("local: start %s: the machine has no boot command; give it boot.command in the spec: %w", ref, provider.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	def, err := json.Marshal(vmDef{NICs: vm.NICs, Disks: vm.Disks, Boot: vm.Boot})
	if err != nil {
		return fmt.Errorf("local: start %s: %w", ref, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.vms[ref]; ok {
		if m.state() == "running" {
			if sameJSON(m.Def, def) {
				return nil
			}
			return fmt.Errorf("local: start %s: it runs already with another definition; stop it first: %w", ref, provider.ErrConflict)
		}
		job = m.Job
		for _, k := range m.Keys {
			p.release(k)
		}
		delete(p.vms, ref)
	}
	for _, ip := range vm.IPs() {
		for _, o := range p.vms {
			if o.Site == vm.Site && o.state() == "running" && slices.Contains(o.IPs, ip) {
				return fmt.Errorf("local: start %s: %s is taken at %s by machine %s: %w", ref, ip, vm.Site, o.Name, provider.ErrConflict)
			}
		}
	}
	for _, d := range vm.Disks {
		if _, err := os.Stat(d.Path); err != nil {
			return fmt.Errorf("local: start %s: disk %s at %s: %w", ref, d.Name, d.Path, provider.ErrNotFound)
		}
	}

	m := &machine{Site: vm.Site, Name: vm.Name, Job: job, Def: def, IPs: vm.IPs(), done: make(chan struct{})}
	env := os.Environ()
	keys := slices.Sorted(maps.Keys(vm.Boot.Env))
	for _, k := range keys {
		env = append(env, k+"="+vm.Boot.Env[k])
	}
	env = append(env, "STANDBY_SITE="+vm.Site, "STANDBY_VM="+vm.Name)
	for i, n := range vm.NICs {
		key := siteIP{Site: vm.Site, Key: vm.Name + "#" + strconv.Itoa(i)}
		if n.IPAddress.IsValid() {
			key.Key = n.IPAddress.String()
			env = append(env, fmt.Sprintf("STANDBY_SPEC_IP_%d=%s", i, n.IPAddress))
		}
		a, err := p.loopbackFor(key)
		if err != nil {
			for _, k := range m.Keys {
				p.release(k)
			}
			return fmt.Errorf("local: start %s: %w", ref, err)
		}
		m.Keys = append(m.Keys, key)
		m.Loopback = append(m.Loopback, a)
		env = append(env, fmt.Sprintf("STANDBY_IP_%d=%s", i, a))
	}
	for _, d := range vm.Disks {
		env = append(env, diskEnv(d.Name)+"="+d.Path)
	}

	if err := p.spawn(m, vm, env); err != nil {
		for _, k := range m.Keys {
			p.release(k)
		}
		return fmt.Errorf("local: start %s: %w", ref, err)
	}
	p.vms[ref] = m
	return p.save()
}

// spawn starts the process; the caller holds mu.
func (p *Provider) spawn(m *machine, vm provider.VM, env []string) error {
	argv := slices.Clone(vm.Boot.Command)
	if argv[0] == "standby" {
		if p.opts.Executable == "" {
			return fmt.Errorf("boot command runs standby but the provider was not told where the standby binary is: %w", provider.ErrInvalid)
		}
		argv[0] = p.opts.Executable
	}
	dir := filepath.Join(p.opts.Dir, "machines", vm.Site, vm.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	console, err := os.OpenFile(filepath.Join(dir, "console.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %q: %w", argv[0], err)
	}
	m.PID = cmd.Process.Pid
	m.Ticks = procgroup.Of(m.PID).Ticks
	go p.reap(m, cmd)
	return nil
}

// reap waits for the main process, then kills what is left of its group:
// a machine whose main process has exited is off.
func (p *Provider) reap(m *machine, cmd *exec.Cmd) {
	err := cmd.Wait()
	m.group().Signal(syscall.SIGKILL)
	p.mu.Lock()
	m.Exited = true
	m.ExitStatus = "exit status 0"
	if err != nil {
		m.ExitStatus = err.Error()
	}
	if cur, ok := p.vms[m.ref()]; ok && cur == m && p.lock != nil {
		// The state file is rewritten by the next change; a failure here
		// only leaves it saying "running" for a machine that adopt will
		// find exited.
		_ = p.save()
	}
	p.mu.Unlock()
	close(m.done)
}

// StopVM stops the machine: SIGTERM to its group, SIGKILL after StopGrace
// (or at once when ctx ends), and returns once no process of it is left.
func (p *Provider) StopVM(ctx context.Context, site, name string) error {
	ref := provider.Ref{Site: site, Kind: provider.KindVM, Name: name}
	p.mu.Lock()
	m, ok := p.vms[ref]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	if err := p.stopGroup(ctx, m); err != nil {
		return fmt.Errorf("local: stop %s: %w", ref, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.vms[ref]; ok && cur == m {
		delete(p.vms, ref)
		for _, k := range m.Keys {
			p.release(k)
		}
	}
	return p.save()
}

func (p *Provider) stopGroup(ctx context.Context, m *machine) error {
	reaped := func() bool {
		if m.done == nil {
			return true
		}
		select {
		case <-m.done:
			return true
		default:
			return false
		}
	}
	return m.group().Stop(ctx, p.opts.StopGrace, reaped)
}

// group is the machine's process group.
func (m *machine) group() procgroup.Group { return procgroup.Group{PID: m.PID, Ticks: m.Ticks} }

// diskEnv names the variable holding the path of disk name, the contract of
// a machine's boot command: STANDBY_DISK_ and the name in capitals, other
// characters as underscores.
func diskEnv(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return "STANDBY_DISK_" + string(b)
}

// sameJSON compares two JSON documents whatever their spacing: a definition
// read back from the state file is indented, a new one is compact.
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// Machine gives the definition a machine was started with, and its job.
func (p *Provider) Machine(ctx context.Context, site, name string) (provider.VM, string, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.vms[provider.Ref{Site: site, Kind: provider.KindVM, Name: name}]
	if !ok {
		return provider.VM{}, "", false, nil
	}
	var def vmDef
	if err := json.Unmarshal(m.Def, &def); err != nil {
		return provider.VM{}, "", false, fmt.Errorf("local: machine %s/%s: its definition is damaged: %w", site, name, err)
	}
	return provider.VM{Site: site, Name: name, NICs: def.NICs, Disks: def.Disks, Boot: def.Boot}, m.Job, true, nil
}
