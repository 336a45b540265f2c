package spec

// Spec is one DR setup: sites, networks on each side, circuits, machines to
// protect and recovery plans. Field names are the contract of
// shared/spec/README.md; add fields, rename none.
type Spec struct {
	Version    int          `yaml:"version" json:"version"`
	Name       string       `yaml:"name" json:"name"`
	Sites      []Site       `yaml:"sites" json:"sites"`
	OnPremises []OnPremises `yaml:"onPremises" json:"onPremises,omitempty"`
	Circuits   []Circuit    `yaml:"circuits" json:"circuits,omitempty"`
	Networks   []Network    `yaml:"networks" json:"networks,omitempty"`
	Protection Protection   `yaml:"protection" json:"protection"`
	Recovery   Recovery     `yaml:"recovery" json:"recovery"`

	// File is the path the spec was read from, for messages.
	File string `yaml:"-" json:"-"`
	// pos maps a field path to where it stands in the file.
	pos map[string]Pos
}

// Site is a place machines run.
type Site struct {
	Name     string     `yaml:"name" json:"name"`
	Region   string     `yaml:"region" json:"region"`
	Provider string     `yaml:"provider" json:"provider"`
	Azure    *AzureSite `yaml:"azure" json:"azure,omitempty"`
}

// AzureSite holds the options of the azure provider.
type AzureSite struct {
	SubscriptionID string `yaml:"subscriptionId" json:"subscriptionId"`
	ResourceGroup  string `yaml:"resourceGroup" json:"resourceGroup"`
}

// OnPremises is one of the customer's own sites.
type OnPremises struct {
	Name         string   `yaml:"name" json:"name"`
	AddressSpace []Prefix `yaml:"addressSpace" json:"addressSpace"`
	Hosts        []Host   `yaml:"hosts" json:"hosts,omitempty"`
}

// Host is an on-premises machine that checks and traces start from.
type Host struct {
	Name      string `yaml:"name" json:"name"`
	IPAddress Addr   `yaml:"ipAddress" json:"ipAddress"`
}

// Circuit is an ExpressRoute circuit.
type Circuit struct {
	Name              string          `yaml:"name" json:"name"`
	PeeringLocation   string          `yaml:"peeringLocation" json:"peeringLocation"`
	Tier              string          `yaml:"tier" json:"tier"`
	BandwidthMbps     int             `yaml:"bandwidthMbps" json:"bandwidthMbps"`
	OnPremises        string          `yaml:"onPremises" json:"onPremises"`
	ProvisioningState string          `yaml:"provisioningState" json:"provisioningState"`
	Enabled           *bool           `yaml:"enabled" json:"enabled"`
	PrivatePeering    *PrivatePeering `yaml:"privatePeering" json:"privatePeering,omitempty"`
	// SubscriptionID is the circuit's subscription; a connection from another
	// subscription needs an authorizationKey (ER-12). Empty: the same.
	SubscriptionID string `yaml:"subscriptionId" json:"subscriptionId,omitempty"`
	// AdvertisedPrefixes counts what on-premises advertises over the circuit
	// (ER-06); zero when unknown.
	OnPremisesPrefixCount int `yaml:"onPremisesPrefixCount" json:"onPremisesPrefixCount,omitempty"`
	// GlobalReach names circuits linked to this one with Global Reach.
	GlobalReach []string `yaml:"globalReach" json:"globalReach,omitempty"`
}

// IsEnabled reports whether the circuit is enabled (default true).
func (c Circuit) IsEnabled() bool { return c.Enabled == nil || *c.Enabled }

// PrivatePeering is a circuit's private peering.
type PrivatePeering struct {
	PrimaryPeerAddressPrefix   Prefix `yaml:"primaryPeerAddressPrefix" json:"primaryPeerAddressPrefix"`
	SecondaryPeerAddressPrefix Prefix `yaml:"secondaryPeerAddressPrefix" json:"secondaryPeerAddressPrefix"`
}

// Network is what exists at one site.
type Network struct {
	Site            string           `yaml:"site" json:"site"`
	VirtualNetworks []VirtualNetwork `yaml:"virtualNetworks" json:"virtualNetworks"`
	Peerings        []Peering        `yaml:"peerings" json:"peerings,omitempty"`
	RouteTables     []RouteTable     `yaml:"routeTables" json:"routeTables,omitempty"`
	Appliances      []Appliance      `yaml:"appliances" json:"appliances,omitempty"`
	Gateways        []Gateway        `yaml:"gateways" json:"gateways,omitempty"`
	Connections     []Connection     `yaml:"connections" json:"connections,omitempty"`
}

// VirtualNetwork is an Azure VNet.
type VirtualNetwork struct {
	Name         string   `yaml:"name" json:"name"`
	AddressSpace []Prefix `yaml:"addressSpace" json:"addressSpace"`
	Subnets      []Subnet `yaml:"subnets" json:"subnets,omitempty"`
}

// Subnet is a VNet's subnet.
type Subnet struct {
	Name                 string   `yaml:"name" json:"name"`
	AddressPrefix        Prefix   `yaml:"addressPrefix" json:"addressPrefix"`
	RouteTable           string   `yaml:"routeTable" json:"routeTable,omitempty"`
	ServiceEndpoints     []string `yaml:"serviceEndpoints" json:"serviceEndpoints,omitempty"`
	NetworkSecurityGroup string   `yaml:"networkSecurityGroup" json:"networkSecurityGroup,omitempty"`
}

// Peering is one direction of a VNet peering.
type Peering struct {
	Name                      string `yaml:"name" json:"name"`
	From                      string `yaml:"from" json:"from"`
	To                        string `yaml:"to" json:"to"`
	AllowVirtualNetworkAccess bool   `yaml:"allowVirtualNetworkAccess" json:"allowVirtualNetworkAccess"`
	AllowForwardedTraffic     bool   `yaml:"allowForwardedTraffic" json:"allowForwardedTraffic"`
	AllowGatewayTransit       bool   `yaml:"allowGatewayTransit" json:"allowGatewayTransit"`
	UseRemoteGateways         bool   `yaml:"useRemoteGateways" json:"useRemoteGateways"`
}

// RouteTable is a user route table.
type RouteTable struct {
	Name                       string  `yaml:"name" json:"name"`
	DisableBgpRoutePropagation bool    `yaml:"disableBgpRoutePropagation" json:"disableBgpRoutePropagation"`
	Routes                     []Route `yaml:"routes" json:"routes"`
}

// Next hop types of a user route.
const (
	NextHopVirtualAppliance      = "VirtualAppliance"
	NextHopVirtualNetworkGateway = "VirtualNetworkGateway"
	NextHopVnetLocal             = "VnetLocal"
	NextHopInternet              = "Internet"
	NextHopNone                  = "None"
)

// Route is one user route.
type Route struct {
	Name             string `yaml:"name" json:"name"`
	AddressPrefix    Prefix `yaml:"addressPrefix" json:"addressPrefix"`
	NextHopType      string `yaml:"nextHopType" json:"nextHopType"`
	NextHopIPAddress Addr   `yaml:"nextHopIpAddress" json:"nextHopIpAddress,omitzero"`
}

// Appliance is a network virtual appliance: it forwards traffic.
type Appliance struct {
	Name           string `yaml:"name" json:"name"`
	VirtualNetwork string `yaml:"virtualNetwork" json:"virtualNetwork"`
	Subnet         string `yaml:"subnet" json:"subnet"`
	IPAddress      Addr   `yaml:"ipAddress" json:"ipAddress"`
}

// Gateway is a virtual network gateway.
type Gateway struct {
	Name           string `yaml:"name" json:"name"`
	VirtualNetwork string `yaml:"virtualNetwork" json:"virtualNetwork"`
	Type           string `yaml:"type" json:"type"`
	Sku            string `yaml:"sku" json:"sku"`
	PublicIPSku    string `yaml:"publicIpSku" json:"publicIpSku"`
	// Provisioned says a pre-provisioned target gateway exists already
	// (GW-06); source gateways exist by definition.
	Provisioned *bool `yaml:"provisioned" json:"provisioned,omitempty"`
}

// Connection links a gateway to a circuit.
type Connection struct {
	Name             string `yaml:"name" json:"name"`
	Gateway          string `yaml:"gateway" json:"gateway"`
	Circuit          string `yaml:"circuit" json:"circuit"`
	RoutingWeight    int    `yaml:"routingWeight" json:"routingWeight"`
	AuthorizationKey string `yaml:"authorizationKey" json:"authorizationKey,omitempty"`
	// SubscriptionID of the gateway's side; differs from the circuit's when
	// the connection crosses subscriptions (ER-12).
	SubscriptionID string `yaml:"subscriptionId" json:"subscriptionId,omitempty"`
}

// Protection holds policies and the protected machines.
type Protection struct {
	Policies        []Policy         `yaml:"policies" json:"policies"`
	VirtualMachines []VirtualMachine `yaml:"virtualMachines" json:"virtualMachines"`
}

// Capture modes of a policy.
const (
	CaptureTracked = "tracked" // writes intercepted, cost follows the change
	CaptureScan    = "scan"    // blocks hashed and compared, cost follows the disk
)

// Policy is how a VM is replicated.
type Policy struct {
	Name                     string   `yaml:"name" json:"name"`
	RecoveryPointRetention   Duration `yaml:"recoveryPointRetention" json:"recoveryPointRetention"`
	CrashConsistentFrequency Duration `yaml:"crashConsistentFrequency" json:"crashConsistentFrequency"`
	AppConsistentFrequency   Duration `yaml:"appConsistentFrequency" json:"appConsistentFrequency"`
	UploadThreadsPerVM       int      `yaml:"uploadThreadsPerVM" json:"uploadThreadsPerVM"`
	BandwidthLimitMbps       int      `yaml:"bandwidthLimitMbps" json:"bandwidthLimitMbps"`
	RPOThreshold             Duration `yaml:"rpoThreshold" json:"rpoThreshold"`
	Capture                  string   `yaml:"capture" json:"capture"`
	BlockSize                Size     `yaml:"blockSize" json:"blockSize"`
}

// VirtualMachine is a protected machine.
type VirtualMachine struct {
	Name             string       `yaml:"name" json:"name"`
	Site             string       `yaml:"site" json:"site"`
	Policy           string       `yaml:"policy" json:"policy"`
	ConsistencyGroup string       `yaml:"consistencyGroup" json:"consistencyGroup,omitempty"`
	NICs             []NIC        `yaml:"nics" json:"nics"`
	Disks            []Disk       `yaml:"disks" json:"disks"`
	Boot             *Boot        `yaml:"boot" json:"boot,omitempty"`
	HealthCheck      *HealthCheck `yaml:"healthCheck" json:"healthCheck,omitempty"`
	Quiesce          *Quiesce     `yaml:"quiesce" json:"quiesce,omitempty"`
}

// NIC is a VM's network interface.
type NIC struct {
	VirtualNetwork string `yaml:"virtualNetwork" json:"virtualNetwork"`
	Subnet         string `yaml:"subnet" json:"subnet"`
	IPAddress      Addr   `yaml:"ipAddress" json:"ipAddress,omitzero"`
}

// Disk is a VM's disk. Size holds the size whether given as sizeGiB or size.
type Disk struct {
	Name    string `yaml:"name" json:"name"`
	SizeGiB int    `yaml:"sizeGiB" json:"sizeGiB,omitempty"`
	Size    Size   `yaml:"size" json:"size"`
	Image   string `yaml:"image" json:"image,omitempty"`
}

// Boot is how a machine runs on local and netlab sites.
type Boot struct {
	Command []string          `yaml:"command" json:"command"`
	Env     map[string]string `yaml:"env" json:"env,omitempty"`
}

// HealthCheck says when a machine counts as up.
type HealthCheck struct {
	HTTP *HTTPProbe `yaml:"http" json:"http,omitempty"`
	TCP  *TCPProbe  `yaml:"tcp" json:"tcp,omitempty"`
}

// HTTPProbe is an HTTP GET that must answer 2xx.
type HTTPProbe struct {
	Port int    `yaml:"port" json:"port"`
	Path string `yaml:"path" json:"path"`
}

// TCPProbe is a TCP connect.
type TCPProbe struct {
	Port int `yaml:"port" json:"port"`
}

// Quiesce holds the commands run around an app-consistent cut.
type Quiesce struct {
	Pre  []string `yaml:"pre" json:"pre,omitempty"`
	Post []string `yaml:"post" json:"post,omitempty"`
}

// Recovery is where machines fail over to and how.
type Recovery struct {
	TargetSite     string         `yaml:"targetSite" json:"targetSite"`
	NetworkMapping NetworkMapping `yaml:"networkMapping" json:"networkMapping"`
	Plans          []Plan         `yaml:"plans" json:"plans"`
}

// Addressing modes of the network mapping.
const (
	AddressingSame      = "same"
	AddressingTranslate = "translate"
)

// NetworkMapping maps source networks to target networks.
type NetworkMapping struct {
	Addressing         string               `yaml:"addressing" json:"addressing"`
	AddressTranslation []AddressTranslation `yaml:"addressTranslation" json:"addressTranslation,omitempty"`
	TargetNames        TargetNames          `yaml:"targetNames" json:"targetNames"`
	Connectivity       Connectivity         `yaml:"connectivity" json:"connectivity"`
	TestNetwork        TestNetwork          `yaml:"testNetwork" json:"testNetwork"`
}

// AddressTranslation maps one prefix onto another of equal length.
type AddressTranslation struct {
	From Prefix `yaml:"from" json:"from"`
	To   Prefix `yaml:"to" json:"to"`
}

// TargetNames says how target resources are named.
type TargetNames struct {
	Suffix *string `yaml:"suffix" json:"suffix"`
}

// Connectivity says how the target hub reaches on-premises.
type Connectivity struct {
	Circuits                []string `yaml:"circuits" json:"circuits"`
	Hub                     string   `yaml:"hub" json:"hub,omitempty"`
	ProvisionBeforeFailover *bool    `yaml:"provisionBeforeFailover" json:"provisionBeforeFailover"`
	// GatewaySku of the generated target gateway; default: the source's.
	GatewaySku string `yaml:"gatewaySku" json:"gatewaySku,omitempty"`
	// RaiseBandwidthMbps raises a standby circuit during failover (ER-11).
	RaiseBandwidthMbps int `yaml:"raiseBandwidthMbps" json:"raiseBandwidthMbps,omitempty"`
	// AllowDisconnectFailure lets a single-circuit failover go on when the
	// source connection cannot be deleted because the source region is down
	// (AS-05); without it the runbook stops for an operator.
	AllowDisconnectFailure bool `yaml:"allowDisconnectFailure" json:"allowDisconnectFailure,omitempty"`
}

// Provision reports whether target networks are built ahead of failover.
func (c Connectivity) Provision() bool {
	return c.ProvisionBeforeFailover == nil || *c.ProvisionBeforeFailover
}

// TestNetwork is where drills run.
type TestNetwork struct {
	Addressing       string `yaml:"addressing" json:"addressing"`
	AddressPool      Prefix `yaml:"addressPool" json:"addressPool"`
	ConnectToCircuit bool   `yaml:"connectToCircuit" json:"connectToCircuit"`
}

// Plan is a recovery plan: groups run in order.
type Plan struct {
	Name   string  `yaml:"name" json:"name"`
	Groups []Group `yaml:"groups" json:"groups"`
}

// Group is a set of VMs started in parallel, with actions around them.
type Group struct {
	Name            string   `yaml:"name" json:"name"`
	VirtualMachines []string `yaml:"virtualMachines" json:"virtualMachines"`
	Pre             []Action `yaml:"pre" json:"pre,omitempty"`
	Post            []Action `yaml:"post" json:"post,omitempty"`
}

// Action is one of script, manual or check.
type Action struct {
	Script *Script `yaml:"script" json:"script,omitempty"`
	Manual *Manual `yaml:"manual" json:"manual,omitempty"`
	Check  *Check  `yaml:"check" json:"check,omitempty"`
}

// Script runs a command.
type Script struct {
	Command []string `yaml:"command" json:"command"`
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// Manual waits for an operator.
type Manual struct {
	Instruction string `yaml:"instruction" json:"instruction"`
}

// Check probes a service from a host.
type Check struct {
	From    string   `yaml:"from" json:"from"`
	HTTP    string   `yaml:"http" json:"http,omitempty"`
	TCP     string   `yaml:"tcp" json:"tcp,omitempty"`
	Timeout Duration `yaml:"timeout" json:"timeout"`
}
