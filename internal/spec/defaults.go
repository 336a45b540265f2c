package spec

import (
	"fmt"
	"time"
)

// DefaultSuffix is the name Site Recovery gives target networks.
const DefaultSuffix = "-asr"

// fillDefaults fills what the spec README says is defaulted. It runs after
// check, so every reference resolves.
func (s *Spec) fillDefaults() {
	yes := true
	for i := range s.Circuits {
		c := &s.Circuits[i]
		if c.ProvisioningState == "" {
			c.ProvisioningState = "Provisioned"
		}
		if c.Enabled == nil {
			c.Enabled = &yes
		}
	}
	for i := range s.Networks {
		for j := range s.Networks[i].Gateways {
			if g := &s.Networks[i].Gateways[j]; g.PublicIPSku == "" {
				g.PublicIPSku = "Standard"
			}
		}
	}
	for i := range s.Protection.Policies {
		p := &s.Protection.Policies[i]
		path := fmt.Sprintf("protection.policies[%d].", i)
		if !s.Has(path + "recoveryPointRetention") {
			p.RecoveryPointRetention = Duration{24 * time.Hour}
		}
		if !s.Has(path + "crashConsistentFrequency") {
			p.CrashConsistentFrequency = Duration{5 * time.Minute}
		}
		if !s.Has(path + "uploadThreadsPerVM") {
			p.UploadThreadsPerVM = 4
		}
		if !s.Has(path + "rpoThreshold") {
			p.RPOThreshold = Duration{30 * time.Minute}
		}
		if p.Capture == "" {
			p.Capture = CaptureTracked
		}
		if !s.Has(path + "blockSize") {
			p.BlockSize = 4 << 20
		}
	}
	for i := range s.Protection.VirtualMachines {
		for j := range s.Protection.VirtualMachines[i].Disks {
			d := &s.Protection.VirtualMachines[i].Disks[j]
			if d.Size == 0 {
				d.Size = Size(int64(d.SizeGiB) << 30)
			}
		}
	}
	nm := &s.Recovery.NetworkMapping
	if nm.Addressing == "" {
		nm.Addressing = AddressingSame
	}
	if nm.TargetNames.Suffix == nil {
		suf := DefaultSuffix
		nm.TargetNames.Suffix = &suf
	}
	if nm.Connectivity.ProvisionBeforeFailover == nil {
		nm.Connectivity.ProvisionBeforeFailover = &yes
	}
	if nm.TestNetwork.Addressing == "" {
		nm.TestNetwork.Addressing = AddressingTranslate
	}
	for i := range s.Recovery.Plans {
		for j := range s.Recovery.Plans[i].Groups {
			g := &s.Recovery.Plans[i].Groups[j]
			for _, list := range [][]Action{g.Pre, g.Post} {
				for k := range list {
					if ch := list[k].Check; ch != nil && ch.Timeout.Duration == 0 {
						ch.Timeout = Duration{2 * time.Minute}
					}
					if sc := list[k].Script; sc != nil && sc.Timeout.Duration == 0 {
						sc.Timeout = Duration{10 * time.Minute}
					}
				}
			}
		}
	}
}

// Suffix returns the target name suffix.
func (nm NetworkMapping) Suffix() string {
	if nm.TargetNames.Suffix == nil {
		return DefaultSuffix
	}
	return *nm.TargetNames.Suffix
}

// Site returns the named site, or nil.
func (s *Spec) Site(name string) *Site {
	for i := range s.Sites {
		if s.Sites[i].Name == name {
			return &s.Sites[i]
		}
	}
	return nil
}

// Network returns the network of the named site, or nil.
func (s *Spec) Network(site string) *Network {
	for i := range s.Networks {
		if s.Networks[i].Site == site {
			return &s.Networks[i]
		}
	}
	return nil
}

// VM returns the named protected machine, or nil.
func (s *Spec) VM(name string) *VirtualMachine {
	for i := range s.Protection.VirtualMachines {
		if s.Protection.VirtualMachines[i].Name == name {
			return &s.Protection.VirtualMachines[i]
		}
	}
	return nil
}

// Circuit returns the named circuit, or nil.
func (s *Spec) Circuit(name string) *Circuit {
	for i := range s.Circuits {
		if s.Circuits[i].Name == name {
			return &s.Circuits[i]
		}
	}
	return nil
}

// PolicyOf returns the policy of a VM, or nil.
func (s *Spec) PolicyOf(vm *VirtualMachine) *Policy {
	for i := range s.Protection.Policies {
		if s.Protection.Policies[i].Name == vm.Policy {
			return &s.Protection.Policies[i]
		}
	}
	return nil
}
