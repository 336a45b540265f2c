package provider

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/standby-dr/standby/internal/spec"
)

// Error kinds. Errors returned by providers wrap one of these where it
// applies, so that callers can tell them apart with errors.Is.
var (
	// ErrNotFound: a resource named as a parent, or the host a check runs
	// from, does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInUse: a delete was refused because something depends on the
	// resource; delete the dependants first (Cleanup does).
	ErrInUse = errors.New("in use")
	// ErrConflict: the request contradicts what exists (a running machine
	// started with another definition, an address that is ambiguous).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request itself is malformed (no job, no name, two
	// resources in one).
	ErrInvalid = errors.New("invalid request")
)

// Kind is the kind of a resource.
type Kind string

// The kinds of resource a provider makes.
const (
	KindVirtualNetwork Kind = "virtualNetwork"
	KindSubnet         Kind = "subnet"
	KindRouteTable     Kind = "routeTable"
	KindAppliance      Kind = "appliance"
	KindGateway        Kind = "gateway"
	KindPeering        Kind = "peering"
	KindConnection     Kind = "connection"
	KindHost           Kind = "host"
	KindVM             Kind = "virtualMachine"
)

// DeleteOrder lists the kinds so that deleting in this order never deletes a
// resource before what depends on it.
var DeleteOrder = []Kind{
	KindVM, KindHost, KindConnection, KindPeering, KindAppliance, KindGateway,
	KindSubnet, KindRouteTable, KindVirtualNetwork,
}

// Ref names a resource. Site is the site (or on-premises site, for hosts)
// it belongs to. Names are unique per kind within a site; a subnet's name
// is "vnet/subnet".
type Ref struct {
	Site string `json:"site"`
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
}

func (r Ref) String() string { return r.Site + "/" + string(r.Kind) + "/" + r.Name }

// Subnet is a subnet with the virtual network it belongs to.
type Subnet struct {
	VirtualNetwork string
	spec.Subnet
}

// Resource is one network resource to create at Site: exactly one of the
// other fields is set. A VirtualNetwork's subnets are created with it, as
// child resources of kind KindSubnet tagged with the same job; deleting the
// virtual network deletes them.
type Resource struct {
	Site           string
	VirtualNetwork *spec.VirtualNetwork
	Subnet         *Subnet
	RouteTable     *spec.RouteTable
	Appliance      *spec.Appliance
	Gateway        *spec.Gateway
	Peering        *spec.Peering
	Connection     *spec.Connection
	// Host is an on-premises host; Site is then the on-premises site.
	Host *spec.Host
}

// Ref returns the name of the resource, or an ErrInvalid error unless
// exactly one field is set.
func (r Resource) Ref() (Ref, error) {
	var refs []Ref
	add := func(k Kind, name string) { refs = append(refs, Ref{Site: r.Site, Kind: k, Name: name}) }
	if v := r.VirtualNetwork; v != nil {
		add(KindVirtualNetwork, v.Name)
	}
	if v := r.Subnet; v != nil {
		add(KindSubnet, v.VirtualNetwork+"/"+v.Name)
	}
	if v := r.RouteTable; v != nil {
		add(KindRouteTable, v.Name)
	}
	if v := r.Appliance; v != nil {
		add(KindAppliance, v.Name)
	}
	if v := r.Gateway; v != nil {
		add(KindGateway, v.Name)
	}
	if v := r.Peering; v != nil {
		add(KindPeering, v.Name)
	}
	if v := r.Connection; v != nil {
		add(KindConnection, v.Name)
	}
	if v := r.Host; v != nil {
		add(KindHost, v.Name)
	}
	switch {
	case len(refs) != 1:
		return Ref{}, fmt.Errorf("resource at %q sets %d kinds; set exactly one: %w", r.Site, len(refs), ErrInvalid)
	case r.Site == "":
		return Ref{}, fmt.Errorf("%s %q has no site: %w", refs[0].Kind, refs[0].Name, ErrInvalid)
	case refs[0].Name == "" || refs[0].Name[0] == '/' || refs[0].Name[len(refs[0].Name)-1] == '/':
		return Ref{}, fmt.Errorf("%s at %s has no name: %w", refs[0].Kind, r.Site, ErrInvalid)
	}
	return refs[0], nil
}

// Disk is one disk of a machine: a file the machine sees as its disk.
type Disk struct {
	Name string
	Path string
}

// VM is a machine to start at Site from its disks.
type VM struct {
	Site string
	Name string
	// NICs place the machine; their addresses are what checks use.
	NICs  []spec.NIC
	Disks []Disk
	// Boot is how local and netlab run the machine.
	Boot spec.Boot
}

// Ref returns the machine's name.
func (v VM) Ref() Ref { return Ref{Site: v.Site, Kind: KindVM, Name: v.Name} }

// IPs returns the static addresses of the NICs, in order.
func (v VM) IPs() []netip.Addr {
	var ips []netip.Addr
	for _, n := range v.NICs {
		if n.IPAddress.IsValid() {
			ips = append(ips, n.IPAddress.Addr)
		}
	}
	return ips
}

// Check is a probe run from a host: From is "site/vm" or "onprem/host";
// exactly one of HTTP (a URL, answered 2xx) and TCP (host:port, connected)
// is set. Addresses are the spec's, as the host would see them.
type Check struct {
	From string `json:"from"`
	HTTP string `json:"http,omitempty"`
	TCP  string `json:"tcp,omitempty"`
}

// Result is the outcome of one probe. A probe that ran and failed is a
// Result with OK false, not an error; an error means the probe could not be
// run (no such host, a malformed URL).
type Result struct {
	OK      bool          `json:"ok"`
	Target  string        `json:"target"` // where the probe went, after any rewriting
	Status  int           `json:"status,omitempty"`
	Detail  string        `json:"detail,omitempty"`
	Elapsed time.Duration `json:"elapsed"`
}

// Item is one resource that exists, with the job that made it.
type Item struct {
	Ref
	Job string `json:"job"`
	// State is a machine's: "running" or "exited".
	State string `json:"state,omitempty"`
	// Address is where the provider reaches a machine (local: its loopback
	// address).
	Address string `json:"address,omitempty"`
}

// Filter selects items; an empty field matches anything.
type Filter struct {
	Job  string
	Site string
	Kind Kind
}

// Match reports whether it selects it.
func (f Filter) Match(it Item) bool {
	return (f.Job == "" || f.Job == it.Job) && (f.Site == "" || f.Site == it.Site) && (f.Kind == "" || f.Kind == it.Kind)
}

// Networks builds and tears down networks.
type Networks interface {
	// CreateNetwork creates or updates r, tagged with job (required).
	CreateNetwork(ctx context.Context, job string, r Resource) error
	// DeleteNetwork deletes the network resource ref; nil if it is absent.
	DeleteNetwork(ctx context.Context, ref Ref) error
}

// Machines starts and stops machines.
type Machines interface {
	// StartVM starts vm from its disks, tagged with job. Starting a machine
	// that runs already with the same definition changes nothing; one that
	// has exited is started again.
	StartVM(ctx context.Context, job string, vm VM) error
	// StopVM stops the machine and forgets it; nil if it is absent. It
	// returns once no process of the machine is left.
	StopVM(ctx context.Context, site, name string) error
}

// Definer gives a machine's definition as it was started, and its job, so
// that a caller can start it again the same way (ok is false when no such
// machine exists). Local and netlab implement it.
type Definer interface {
	Machine(ctx context.Context, site, name string) (vm VM, job string, ok bool, err error)
}

// Checker runs one probe; the caller bounds it with ctx and retries it
// (WaitCheck).
type Checker interface {
	Check(ctx context.Context, c Check) (Result, error)
}

// Lister lists what exists.
type Lister interface {
	List(ctx context.Context, f Filter) ([]Item, error)
}

// Provider is a whole site implementation.
type Provider interface {
	Networks
	Machines
	Checker
	Lister
}
