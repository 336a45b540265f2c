package netlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/procgroup"
	"github.com/standby-dr/standby/internal/spec"
)

// vmDef is what makes two starts of a machine the same.
type vmDef struct {
	NICs  []spec.NIC      `json:"nics"`
	Disks []provider.Disk `json:"disks"`
	Boot  spec.Boot       `json:"boot"`
}

// StartVM builds the machine's namespace on its site's fabric and runs its
// boot command there, in its own session, with STANDBY_DISK_<NAME> and
// STANDBY_IP_<n> set, its output appended to a log in the lab directory.
func (p *Provider) StartVM(ctx context.Context, job string, vm provider.VM) error {
	ref := vm.Ref()
	switch {
	case job == "":
		return fmt.Errorf("netlab: start %s: no job tag: %w", ref, provider.ErrInvalid)
	case vm.Site == "" || vm.Name == "":
		return fmt.Errorf("netlab: start %s: site and name are required: %w", ref, provider.ErrInvalid)
	case len(vm.Boot.Command) == 0:
		return fmt.Errorf("netlab: start %s: the machine has no boot command; give it boot.command in the spec: %w", ref, provider.ErrInvalid)
	case len(vm.IPs()) == 0:
		return fmt.Errorf("netlab: start %s: the machine has no NIC with a static address: %w", ref, provider.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	def, err := json.Marshal(vmDef{NICs: vm.NICs, Disks: vm.Disks, Boot: vm.Boot})
	if err != nil {
		return fmt.Errorf("netlab: start %s: %w", ref, err)
	}
	return p.withState(ctx, true, func(st *state) error {
		if m := st.machine(ref); m != nil {
			if machineState(m) == "running" {
				if sameJSON(m.Def, def) {
					return nil
				}
				return fmt.Errorf("netlab: start %s: it runs already with another definition; stop it first: %w", ref, provider.ErrConflict)
			}
			job = m.Job
			st.Machines = slices.DeleteFunc(st.Machines, func(x *machine) bool { return x == m })
		}
		for _, n := range vm.NICs {
			if !has(st, vm.Site, provider.KindSubnet, n.VirtualNetwork+"/"+n.Subnet) {
				return fmt.Errorf("netlab: start %s: %w", ref, notFound("subnet", n.VirtualNetwork+"/"+n.Subnet, "create the machine's network first"))
			}
		}
		for _, ip := range vm.IPs() {
			for _, o := range st.Machines {
				if o.Site == vm.Site && slices.Contains(o.IPs, ip) {
					return fmt.Errorf("netlab: start %s: %s is taken at %s by machine %s: %w", ref, ip, vm.Site, o.Name, provider.ErrConflict)
				}
			}
		}
		for _, d := range vm.Disks {
			if _, err := os.Stat(d.Path); err != nil {
				return fmt.Errorf("netlab: start %s: disk %s at %s: %w", ref, d.Name, d.Path, provider.ErrNotFound)
			}
		}
		m := &machine{Site: vm.Site, Name: vm.Name, Job: job, Def: def, IPs: vm.IPs()}
		st.Machines = append(st.Machines, m)
		if err := p.reconcile(ctx, st); err != nil {
			return fmt.Errorf("netlab: start %s: %w", ref, err)
		}
		if err := p.spawn(m, vm); err != nil {
			st.Machines = slices.DeleteFunc(st.Machines, func(x *machine) bool { return x == m })
			return errors.Join(fmt.Errorf("netlab: start %s: %w", ref, err), p.reconcile(ctx, st))
		}
		return nil
	})
}

// spawn starts the boot command in the machine's namespace.
func (p *Provider) spawn(m *machine, vm provider.VM) error {
	argv := slices.Clone(vm.Boot.Command)
	if argv[0] == "standby" {
		if p.opts.Executable == "" {
			return fmt.Errorf("boot command runs standby but the lab was not told where the standby binary is: %w", provider.ErrInvalid)
		}
		argv[0] = p.opts.Executable
	}
	dir := filepath.Join(p.opts.Dir, "machines", vm.Site, vm.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	m.Log = filepath.Join(dir, "console.log")
	console, err := os.OpenFile(m.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	env := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(vm.Boot.Env)) {
		env = append(env, k+"="+vm.Boot.Env[k])
	}
	env = append(env, "STANDBY_SITE="+vm.Site, "STANDBY_VM="+vm.Name)
	for i, n := range vm.NICs {
		if n.IPAddress.IsValid() {
			env = append(env, fmt.Sprintf("STANDBY_IP_%d=%s", i, n.IPAddress), fmt.Sprintf("STANDBY_SPEC_IP_%d=%s", i, n.IPAddress))
		}
	}
	for _, d := range vm.Disks {
		env = append(env, diskEnv(d.Name)+"="+d.Path)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := inNS(p.nsName(kindVM, vm.Site+"/"+vm.Name), cmd.Start); err != nil {
		return fmt.Errorf("run %q: %w", argv[0], err)
	}
	m.PID = cmd.Process.Pid
	m.Ticks = procgroup.Of(m.PID).Ticks
	done := make(chan struct{})
	p.mu.Lock()
	p.reaped[m.PID] = done
	p.mu.Unlock()
	go func(pid int, ticks uint64) {
		// A machine whose main process exited is off: nothing of it stays.
		cmd.Wait()
		procgroup.Group{PID: pid, Ticks: ticks}.Signal(syscall.SIGKILL)
		close(done)
	}(m.PID, m.Ticks)
	return nil
}

// StopVM stops the machine (SIGTERM to its group, SIGKILL after the
// grace), removes its namespace and forgets it.
func (p *Provider) StopVM(ctx context.Context, site, name string) error {
	ref := provider.Ref{Site: site, Kind: provider.KindVM, Name: name}
	var m *machine
	if err := p.withState(ctx, false, func(st *state) error { m = st.machine(ref); return nil }); err != nil {
		return err
	}
	if m == nil {
		return nil
	}
	if err := p.stopGroup(ctx, m); err != nil {
		return fmt.Errorf("netlab: stop %s: %w", ref, err)
	}
	return p.withState(ctx, true, func(st *state) error {
		st.Machines = slices.DeleteFunc(st.Machines, func(x *machine) bool { return x.ref() == ref && x.PID == m.PID })
		if err := p.reconcile(ctx, st); err != nil {
			return fmt.Errorf("netlab: stop %s: %w", ref, err)
		}
		return nil
	})
}

// stopGroup ends a machine's process group and returns once none of it
// is left.
func (p *Provider) stopGroup(ctx context.Context, m *machine) error {
	reaped := func() bool {
		p.mu.Lock()
		done, ours := p.reaped[m.PID]
		p.mu.Unlock()
		if !ours {
			return true
		}
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	return m.group().Stop(ctx, p.opts.StopGrace, reaped)
}

// group is the machine's process group.
func (m *machine) group() procgroup.Group { return procgroup.Group{PID: m.PID, Ticks: m.Ticks} }

// machineState is "running" while the machine's main process lives.
func machineState(m *machine) string {
	if m.group().Running() {
		return "running"
	}
	return "exited"
}

// diskEnv names the variable holding a disk's path: STANDBY_DISK_ and the
// name in capitals, other characters as underscores.
func diskEnv(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return "STANDBY_DISK_" + string(b)
}

// Machine gives the definition a machine was started with, and its job.
func (p *Provider) Machine(ctx context.Context, site, name string) (provider.VM, string, bool, error) {
	var vm provider.VM
	var job string
	var found bool
	err := p.withState(ctx, false, func(st *state) error {
		m := st.machine(provider.Ref{Site: site, Kind: provider.KindVM, Name: name})
		if m == nil {
			return nil
		}
		var def vmDef
		if err := json.Unmarshal(m.Def, &def); err != nil {
			return fmt.Errorf("netlab: machine %s/%s: its definition is damaged: %w", site, name, err)
		}
		vm = provider.VM{Site: site, Name: name, NICs: def.NICs, Disks: def.Disks, Boot: def.Boot}
		job, found = m.Job, true
		return nil
	})
	return vm, job, found, err
}
