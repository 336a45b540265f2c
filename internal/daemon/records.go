package daemon

import (
	"context"
	"slices"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/replication"
	"github.com/standby-dr/standby/internal/spec"
	"github.com/standby-dr/standby/internal/workload"
)

// ledgerRecords counts the records of VMs that run the ledger workload
// (`standby workload ledger --disk NAME`), read from their disk without
// changing it: the count a failover's report gives as records lost.
type ledgerRecords struct {
	spec *spec.Spec
	p    *replication.Protector
}

// Records counts the ledger's records on vm's disks.
func (l ledgerRecords) Records(ctx context.Context, vm string, disks []provider.Disk) (uint64, bool) {
	name := ledgerDisk(l.spec.VM(vm))
	if name == "" {
		return 0, false
	}
	i := slices.IndexFunc(disks, func(d provider.Disk) bool { return d.Name == name })
	if i < 0 {
		return 0, false
	}
	// Through the Protector: the disk may be one this process serves.
	r, size, done, err := l.p.DiskReader(disks[i].Path)
	if err != nil {
		return 0, false
	}
	defer done()
	rec, err := workload.InspectLedgerAt(r, size, disks[i].Path)
	if err != nil {
		return 0, false
	}
	return rec.LastSeq, true
}

// ledgerDisk is the data disk of a VM booted as a ledger, or "".
func ledgerDisk(vm *spec.VirtualMachine) string {
	if vm == nil || vm.Boot == nil {
		return ""
	}
	c := vm.Boot.Command
	i := slices.Index(c, "ledger")
	if i < 1 || c[i-1] != "workload" {
		return ""
	}
	for j := i + 1; j < len(c); j++ {
		switch {
		case c[j] == "--disk" && j+1 < len(c):
			return c[j+1]
		case len(c[j]) > 7 && c[j][:7] == "--disk=":
			return c[j][7:]
		}
	}
	return ""
}
