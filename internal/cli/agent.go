package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replication"
	"github.com/standby-dr/standby/internal/ship"
	"github.com/standby-dr/standby/internal/spec"
)

type agentOpts struct {
	file, site, to, dir string
	cert, key, ca       string
	insecure            bool
}

func newAgentCmd(e *env) *cobra.Command {
	var o agentOpts
	cmd := &cobra.Command{
		Use:   "agent -f SPEC --site SITE --to https://HOST:PORT [--dir DIR]",
		Short: "Serve a site's protected disks and replicate them to a receiver",
		Long: `Runs the protected-site end of replication across machines, for every
protected VM of the spec at --site: each disk is served as a tracked file
(as standby replica serve does) and replicated continuously to the
standby receiver at --to, into its replica VM/DISK.

Under --dir, a disk's backing file is disks/VM/DISK.img, created sparse at
the spec's size when missing, and the VM's process uses the tracked file
mnt/VM/DISK as its disk. Points are cut per the VM's policy:
crashConsistentFrequency (0s: continuous), appConsistentFrequency around
the VM's quiesce commands, uploadThreadsPerVM streams per VM and
bandwidthLimitMbps shared by them; the replicas' retention is the
receiver's to apply. VMs of one consistencyGroup are cut at one instant,
on the schedule of the group's first VM.

Each VM, or consistency group, writes a status file each second beside its
first disk's tracked file: standby replica watch --mount DIR/mnt/VM/DISK
shows it. Runs until SIGINT or SIGTERM, then unmounts the disks (waiting
for their users to close them) and records a clean shutdown, so a restart
resumes without a resync.

The receiver is reached over TLS 1.3 with a client certificate; on one
machine, --insecure-loopback ships in plain TCP to a loopback receiver.`,
		Example: `  standby agent -f contoso.yaml --site eastasia --to https://dr.example:7443 --dir /srv/standby \
      --tls-cert agent.pem --tls-key agent.key --ca ca.pem
  standby receiver --listen 127.0.0.1:7443 --root /tmp/replicas --insecure-loopback &
  standby agent -f examples/local-quickstart.yaml --site eastasia --to https://127.0.0.1:7443 \
      --dir /tmp/agent --insecure-loopback
  standby replica watch --mount /tmp/agent/mnt/app1/os`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAgent(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "DR spec file (YAML)")
	f.StringVar(&o.site, "site", "", "the site whose protected VMs this agent serves")
	f.StringVar(&o.to, "to", "", "the receiver: https://HOST:PORT")
	f.StringVar(&o.dir, "dir", "standby-agent", "directory of the disks (disks/VM/DISK.img) and their tracked files (mnt/VM/DISK)")
	f.StringVar(&o.cert, "tls-cert", "", "client certificate (PEM)")
	f.StringVar(&o.key, "tls-key", "", "client private key (PEM)")
	f.StringVar(&o.ca, "ca", "", "CA certificate (PEM) of the receiver (default: the system's)")
	f.BoolVar(&o.insecure, "insecure-loopback", false, "plain TCP without TLS, to a receiver on a loopback address only")
	return cmd
}

// agentGrain is the unit of write tracking of the agent's disks.
const agentGrain = 64 << 10

// receiverBase checks --to and returns the URL the disks' paths are added
// to: https://HOST:PORT, or tcp://HOST:PORT with --insecure-loopback.
func (o agentOpts) receiverBase() (string, error) {
	u, err := url.Parse(o.to)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "tcp") {
		return "", badInputf("--to %q: want https://HOST:PORT", o.to)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", badInputf("--to %s: give the receiver alone, https://HOST:PORT: each disk goes to its VM/DISK under it", o.to)
	}
	tlsGiven := o.cert != "" || o.key != "" || o.ca != ""
	switch {
	case o.insecure && tlsGiven:
		return "", badInputf("--insecure-loopback and --tls-cert/--tls-key/--ca exclude each other")
	case o.insecure || u.Scheme == "tcp":
		if !ship.IsLoopback(u.Hostname()) {
			return "", badInputf("--to %s: plain TCP is for a loopback receiver only: use https:// with --tls-cert and --tls-key", o.to)
		}
		return "tcp://" + u.Host, nil
	case o.cert == "" || o.key == "":
		return "", badInputf("--to %s: TLS needs --tls-cert and --tls-key (and --ca unless the system trusts the receiver), or --insecure-loopback for a loopback receiver", o.to)
	}
	return "https://" + u.Host, nil
}

func runAgent(ctx context.Context, e *env, o agentOpts) error {
	switch {
	case o.file == "":
		return badInputf("-f SPEC is required")
	case o.site == "":
		return badInputf("--site SITE is required")
	case o.to == "":
		return badInputf("--to https://HOST:PORT is required")
	case o.dir == "":
		return badInputf("--dir DIR cannot be empty")
	}
	base, err := o.receiverBase()
	if err != nil {
		return err
	}
	s, err := spec.Load(o.file)
	if err != nil {
		return err
	}
	groups, sizes, err := agentGroups(s, o, base)
	if err != nil {
		return err
	}
	clk := clock.Real{}
	out := &serveOutput{e: e}
	var served []*servedGroup
	defer func() {
		for i := len(served) - 1; i >= 0; i-- {
			served[i].close()
		}
	}()
	for _, g := range groups {
		if err := prepareAgentDisks(g, sizes); err != nil {
			return err
		}
		sg, err := openServeGroup(ctx, out, g, clk)
		if err != nil {
			return err
		}
		served = append(served, sg)
		pol := g.vms[0].vm.Policy
		out.printf("serving %s (%d VM(s), %d disk(s)), points every %s to %s; status in %s\n",
			g.name, len(g.vms), len(sg.served), durationOr(pol.CrashConsistentFrequency.Duration, "batch (continuous)"), base, g.status)
	}

	// Every group runs until ctx is done; one that ends on its own (an
	// error) stops the others, so the agent never runs half its VMs.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(served))
	var wg sync.WaitGroup
	for i, sg := range served {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			if err := sg.run(runCtx); err != nil {
				errs[i] = fmt.Errorf("agent: %s: %w", sg.sg.name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// agentGroups lists what the agent serves: the protected VMs at o.site, a
// consistency group together, a VM without one on its own, in the spec's
// order; and the size of each disk, by backing file.
func agentGroups(s *spec.Spec, o agentOpts, base string) (groups []groupToServe, sizes map[string]int64, err error) {
	if s.Site(o.site) == nil {
		return nil, nil, badInputf("--site %s: the spec %s has no such site", o.site, s.File)
	}
	sizes = map[string]int64{}
	index := map[string]int{} // consistency group -> groups[i]
	for i := range s.Protection.VirtualMachines {
		vm := &s.Protection.VirtualMachines[i]
		if vm.Site != o.site || len(vm.Disks) == 0 {
			continue
		}
		pol := s.PolicyOf(vm)
		if pol == nil {
			return nil, nil, badInputf("VM %s: policy %q is not in the spec", vm.Name, vm.Policy)
		}
		if pol.Capture != "tracked" {
			return nil, nil, badInputf("VM %s: policy %s captures by %s: the agent serves tracked disks only (use standby replica sync for scan capture)", vm.Name, pol.Name, pol.Capture)
		}
		v := vmToServe{vm: replication.VM{Name: vm.Name, Policy: *pol, Quiesce: vm.Quiesce}}
		if pol.BandwidthLimitMbps > 0 {
			v.limiter = ship.NewLimiter(ship.MbpsToBytes(float64(pol.BandwidthLimitMbps)), clock.Real{})
		}
		for _, d := range vm.Disks {
			src := filepath.Join(o.dir, "disks", vm.Name, d.Name+".img")
			sizes[src] = int64(d.Size)
			v.disks = append(v.disks, diskToServe{
				source: src,
				mount:  filepath.Join(o.dir, "mnt", vm.Name, d.Name),
				to:     base + "/" + vm.Name + "/" + d.Name,
			})
		}
		name := vm.ConsistencyGroup
		if name == "" {
			name = vm.Name
		} else if j, ok := index[name]; ok {
			groups[j].vms = append(groups[j].vms, v)
			continue
		}
		index[name] = len(groups)
		groups = append(groups, groupToServe{
			name: name, vms: []vmToServe{v}, status: serveStatusPath(v.disks[0].mount),
			grain: agentGrain, blockSize: int64(pol.BlockSize),
			cert: o.cert, key: o.key, ca: o.ca,
		})
	}
	if len(groups) == 0 {
		return nil, nil, badInputf("--site %s: the spec %s protects no VM with disks there", o.site, s.File)
	}
	return groups, sizes, nil
}

// prepareAgentDisks creates the backing files of a group's disks, sparse
// at the spec's size (sizes, by backing file), and the directories of
// their tracked files.
func prepareAgentDisks(g groupToServe, sizes map[string]int64) error {
	for _, v := range g.vms {
		for _, d := range v.disks {
			if err := ensureSparseDisk(d.source, sizes[d.source]); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(d.mount), 0o755); err != nil {
				return fmt.Errorf("agent: create the directory of %s: %w", d.mount, err)
			}
			if !servedEarlierOrFree(d.mount) {
				return badInputf("agent: %s exists and is not a disk served earlier: move it away", d.mount)
			}
		}
	}
	return nil
}

// ensureSparseDisk creates the disk file at path, sparse, of size bytes,
// unless it exists; an existing one must have that size.
func ensureSparseDisk(path string, size int64) error {
	if _, err := os.Stat(path); err == nil {
		have, err := capture.DiskSize(path)
		if err != nil {
			return err
		}
		if have != size {
			return badInputf("agent: the disk %s holds %d bytes, the spec says %d: a disk is not resized in place; move it away to start afresh", path, have, size)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("agent: create the directory of %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("agent: create the disk %s: %w", path, err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("agent: create the disk %s of %d bytes: %w", path, size, err)
	}
	return nil
}
