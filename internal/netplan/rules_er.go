package netplan

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/standby-dr/standby/internal/spec"
)

func erRules() []Rule {
	return []Rule{
		{ID: "ER-01", Severity: SevError, Scope: ScopeTarget, Title: "a circuit the target uses is provisioned, enabled and has private peering", check: checkER01},
		{ID: "ER-02", Severity: SevError, Scope: ScopeTarget, Title: "a VNet linked to a circuit outside the circuit's geopolitical area needs Premium; Local reaches only its metro", check: checkER02},
		{ID: "ER-03", Severity: SevError, Scope: ScopeFailover, Title: "VNet links per circuit within the tier's limit, source and target together", check: checkER03},
		{ID: "ER-04", Severity: SevError, Scope: ScopeFailover, Title: "no two VNets with overlapping advertised prefixes on one circuit at the same time", check: checkER04},
		{ID: "ER-05", Severity: SevError, Scope: ScopeTarget, Title: "circuits per VNet: at most 4 from one location, one for geo-redundancy, 4/8/16 in all by gateway SKU", check: checkER05},
		{ID: "ER-06", Severity: SevError, Scope: ScopeFailover, Title: "prefix budgets of a connection and of on-premises advertisements", check: checkER06},
		{ID: "ER-07", Severity: SevError, Scope: ScopeFailover, Title: "a circuit's private-peering /30s overlap no VNet of either site", check: checkER07},
		{ID: "ER-08", Severity: SevError, Scope: ScopeFailover, Title: "Global Reach across geopolitical areas needs Premium on both circuits", check: checkER08},
		{ID: "ER-09", Severity: SevWarning, Scope: ScopeFailover, Title: "two circuits at the same place do not survive a location outage", check: checkER09},
		{ID: "ER-10", Severity: SevWarning, Scope: ScopeFailover, Title: "source and target connected at once need a path preference that favours the target after failover", check: checkER10},
		{ID: "ER-11", Severity: SevWarning, Scope: ScopeFailover, Title: "a standby circuit thinner than production is raised before or during failover", check: checkER11},
		{ID: "ER-12", Severity: SevError, Scope: ScopeTarget, Title: "a connection across subscriptions needs an unused authorizationKey", check: checkER12},
	}
}

// ---- shared helpers of the rule files ----

// all returns every site's network with the target as planned in full:
// the source sites as they are, and the target site with what is
// pre-provisioned plus everything standby generates. Cross-site peerings
// resolve across them. It is cached beside the state worlds.
func (c *checkCtx) all() *world {
	const key = "#all"
	if w, ok := c.worlds[key]; ok {
		return w
	}
	nets := slices.Clone(c.p.srcNets)
	roles := map[string]string{}
	for _, n := range nets {
		roles[n.Site] = "source"
	}
	if t := c.p.Topology.TargetSite; t != "" && c.p.Target != nil {
		roles[t] = "target"
		nets = append(nets, c.p.Target)
	}
	w := &world{state: key, sites: buildSites(c.p.spec, nets, roles)}
	c.worlds[key] = w
	return w
}

// sites returns the source sites, sorted, then the target site.
func (c *checkCtx) sites() []*Site {
	var src []*Site
	var tgt *Site
	for _, st := range sortedSites(c.all().sites) {
		if st.Role == "target" {
			tgt = st
		} else {
			src = append(src, st)
		}
	}
	if tgt != nil {
		src = append(src, tgt)
	}
	return src
}

// targetSite returns the target site of the full plan, or nil.
func (c *checkCtx) targetSite() *Site {
	if t := c.p.Topology.TargetSite; t != "" {
		return c.all().sites[t]
	}
	return nil
}

// vnetByID finds a VNet of the full plan by its ID.
func (c *checkCtx) vnetByID(id string) *VNet {
	site, name, ok := strings.Cut(id, "/")
	if !ok {
		return nil
	}
	if st := c.all().sites[site]; st != nil {
		return st.VNet(name)
	}
	return nil
}

func scopeOf(st *Site) string {
	if st.Role == "target" {
		return ScopeTarget
	}
	return ScopeSource
}

// sourceOf returns the source resource a generated target resource copies
// (through the mapping; a route or subnet below a mapped resource maps with
// it), or "".
func (c *checkCtx) sourceOf(id string) string {
	best, bestSrc := "", ""
	for _, e := range c.p.Mapping {
		if e.Status != "generated" {
			continue
		}
		if e.Target == id {
			return e.Source
		}
		if strings.HasPrefix(id, e.Target+"/") && len(e.Target) > len(best) {
			best, bestSrc = e.Target, e.Source
		}
	}
	if best == "" {
		return ""
	}
	return bestSrc + id[len(best):]
}

// inherit reports findings on source and target sites; a generated target
// resource whose source counterpart had the same finding is not reported
// again: the source finding covers it, and fixing the source fixes both.
// A problem seen twice on one resource (from both ends of a path) is
// reported once.
type inherit struct {
	c     *checkCtx
	fired map[string]bool
}

func (c *checkCtx) inheriting() *inherit { return &inherit{c: c, fired: map[string]bool{}} }

// norm names a resource in keys: a generated target resource by its
// source, so that the keys of a problem and of its copy match.
func (h *inherit) norm(id string) string {
	if src := h.c.sourceOf(id); src != "" {
		return src
	}
	return id
}

// report adds a finding about resource id of site st; key tells one kind
// of problem from another for the same resource (name resources in it
// through norm).
func (h *inherit) report(st *Site, sev, key, id, hint, format string, args ...any) {
	if h.fired[key+"|"+id] {
		return
	}
	if src := h.c.sourceOf(id); st.Role == "target" && src != "" && h.fired[key+"|"+src] {
		return
	}
	h.fired[key+"|"+id] = true
	h.c.reportAs(sev, scopeOf(st), id, hint, format, args...)
}

// circuitID names a circuit the way findings and runbooks do.
func circuitID(name string) string { return "circuits/" + name }

// targetNetPath says where a target-side fix goes in the spec.
func (c *checkCtx) targetNetPath() string {
	return fmt.Sprintf("networks[site: %s]", c.p.Topology.TargetSite)
}

// ---- connection timeline ----

// moment is the set of connections that exist at one point of the
// failover: the start, after each create-connection, and the end of each
// runbook phase.
type moment struct {
	phase string // PhaseBefore for the start
	end   bool   // the end of the phase
	conns []*Connection
}

var phaseWords = map[string]string{PhaseBefore: "before failover", PhaseFailover: "during failover", PhaseAfter: "after failover", PhaseFailback: "during failback"}

func (m moment) when() string {
	if m.end && m.phase == PhaseFailover {
		return "once failover is done"
	}
	return phaseWords[m.phase]
}

// connByID returns every connection of the full plan by ID.
func (c *checkCtx) connByID() map[string]*Connection {
	out := map[string]*Connection{}
	for _, st := range c.all().sites {
		for _, cn := range st.Connections {
			out[cn.ID()] = cn
		}
	}
	return out
}

// timeline walks the runbook phase by phase, in list order within a
// phase, starting from the source connections and the pre-provisioned
// target ones.
func (c *checkCtx) timeline() []moment {
	all := c.connByID()
	live := map[string]*Connection{}
	for id, cn := range all {
		if cn.Site.Role != "target" || !c.p.generated[id] {
			live[id] = cn
		}
	}
	snap := func(phase string, end bool) moment {
		m := moment{phase: phase, end: end}
		for _, id := range sortedKeys(live) {
			m.conns = append(m.conns, live[id])
		}
		return m
	}
	ms := []moment{snap(PhaseBefore, false)}
	for _, ph := range []string{PhaseBefore, PhaseFailover, PhaseAfter, PhaseFailback} {
		for _, a := range c.p.Runbook {
			if a.Phase != ph {
				continue
			}
			switch a.Action {
			case ActDeleteConn:
				delete(live, a.Resource)
			case ActCreateConn:
				if cn := all[a.Resource]; cn != nil {
					live[a.Resource] = cn
					ms = append(ms, snap(ph, false))
				}
			}
		}
		ms = append(ms, snap(ph, true))
	}
	return ms
}

// advertised is what a connection's hub advertises, or nil.
func advertised(cn *Connection) []netip.Prefix {
	if cn.Gateway == nil || cn.Gateway.VNet == nil {
		return nil
	}
	return Advertised(cn.Gateway.VNet)
}

// pairKey names an unordered pair.
func pairKey(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return a + "|" + b
}

// runbookDependsOn reports whether action id depends, directly or through
// others, on action dep.
func runbookDependsOn(rb []Action, id, dep string) bool {
	byID := map[string]*Action{}
	for i := range rb {
		byID[rb[i].ID] = &rb[i]
	}
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(x string) bool {
		if seen[x] {
			return false
		}
		seen[x] = true
		a := byID[x]
		if a == nil {
			return false
		}
		for _, d := range a.DependsOn {
			if d == dep || walk(d) {
				return true
			}
		}
		return false
	}
	return walk(id)
}

// runbookAction returns the first runbook action of a kind on a resource in
// one of the phases, or nil.
func runbookAction(rb []Action, kind, resource string, phases ...string) *Action {
	for i := range rb {
		a := &rb[i]
		if a.Action == kind && a.Resource == resource && (len(phases) == 0 || slices.Contains(phases, a.Phase)) {
			return a
		}
	}
	return nil
}

// onPremPrefixCount is what on-premises advertises over a circuit: the
// declared count, else the on-premises address space.
func (c *checkCtx) onPremPrefixCount(ci *spec.Circuit) int {
	if ci.OnPremisesPrefixCount > 0 {
		return ci.OnPremisesPrefixCount
	}
	for _, o := range c.p.spec.OnPremises {
		if o.Name == ci.OnPremises {
			return len(o.AddressSpace)
		}
	}
	return 0
}

// ---- the rules ----

// targetCircuitNames returns the circuits the target uses: the topology's
// and those of every target connection.
func (c *checkCtx) targetCircuitNames() []string {
	out := slices.Clone(c.p.Topology.TargetCircuits)
	if st := c.targetSite(); st != nil {
		for _, cn := range st.Connections {
			if cn.Circuit != nil && !slices.Contains(out, cn.Circuit.Name) {
				out = append(out, cn.Circuit.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

func checkER01(c *checkCtx) {
	for _, name := range c.targetCircuitNames() {
		ci := c.p.spec.Circuit(name)
		if ci == nil {
			continue
		}
		id := circuitID(name)
		if ci.ProvisioningState != "Provisioned" {
			c.report(id, "have the connectivity provider provision the circuit (then set provisioningState: Provisioned), or name a provisioned circuit in recovery.networkMapping.connectivity.circuits",
				"circuit %s is %s, not Provisioned, so the target hub cannot connect to it", name, ci.ProvisioningState)
		}
		if !ci.IsEnabled() {
			c.report(id, "enable the circuit (circuits[].enabled: true) or name another one in recovery.networkMapping.connectivity.circuits",
				"circuit %s is disabled, so the target hub cannot connect to it", name)
		}
		if ci.PrivatePeering == nil {
			c.report(id, "configure private peering on the circuit and declare it in circuits[].privatePeering (primary and secondary /30)",
				"circuit %s has no private peering, which a VNet connection needs", name)
		}
	}
}

func checkER02(c *checkCtx) {
	geo := c.p.geo
	for _, st := range c.sites() {
		for _, cn := range st.Connections {
			ci := cn.Circuit
			if ci == nil || ci.Tier == "Premium" {
				continue
			}
			region := st.Region
			locArea, regArea := geo.LocationArea(ci.PeeringLocation), geo.RegionArea(region)
			if locArea == "" || regArea == "" {
				c.reportAs(SevInfo, scopeOf(st), cn.ID(), "add the region and the peering location to the geography data file, or check their spelling",
					"cannot tell whether circuit %s at %q reaches region %q: the geography data does not know %s", ci.Name, ci.PeeringLocation, region, unknownGeo(locArea, ci.PeeringLocation, regArea, region))
				continue
			}
			switch ci.Tier {
			case "Local":
				local := geo.LocalRegions(ci.PeeringLocation)
				if !slices.ContainsFunc(local, func(r string) bool { return strings.EqualFold(r, region) }) {
					reach := "no region"
					if len(local) > 0 {
						reach = strings.Join(local, ", ")
					}
					c.reportAs(SevError, scopeOf(st), cn.ID(), fmt.Sprintf("set circuits[%s].tier to Standard (same area) or Premium, or connect a circuit whose metro includes %s", ci.Name, region),
						"connection %s links site %s (%s) to Local circuit %s at %s, which reaches only %s", cn.Name, st.Name, region, ci.Name, ci.PeeringLocation, reach)
				}
			default:
				if locArea != regArea {
					hint := fmt.Sprintf("set circuits[%s].tier: Premium, or connect a circuit at a peering location in %s", ci.Name, regArea)
					if st.Role == "target" {
						hint = fmt.Sprintf("set circuits[%s].tier: Premium (with a single circuit and a target region elsewhere, Site Recovery's guide asks for Premium), or name a circuit in %s in recovery.networkMapping.connectivity.circuits", ci.Name, regArea)
					}
					c.reportAs(SevError, scopeOf(st), cn.ID(), hint,
						"connection %s links site %s (%s, %s) to %s circuit %s at %s (%s): crossing geopolitical areas needs Premium", cn.Name, st.Name, region, regArea, ci.Tier, ci.Name, ci.PeeringLocation, locArea)
				}
			}
		}
	}
}

func unknownGeo(locArea, loc, regArea, region string) string {
	var s []string
	if locArea == "" {
		s = append(s, "peering location "+loc)
	}
	if regArea == "" {
		s = append(s, "region "+region)
	}
	return strings.Join(s, " nor ")
}

// linkLimit is how many VNet links a circuit allows.
func linkLimit(ci *spec.Circuit) int {
	if ci.Tier != "Premium" {
		return 10
	}
	steps := []struct{ mbps, links int }{{10000, 100}, {5000, 75}, {2000, 60}, {1000, 50}, {500, 40}, {200, 25}, {100, 25}}
	for _, s := range steps {
		if ci.BandwidthMbps >= s.mbps {
			return s.links
		}
	}
	return 20
}

// globalReachPeers returns the circuits linked to ci with Global Reach,
// whichever side declares the link.
func (c *checkCtx) globalReachPeers(ci *spec.Circuit) []string {
	var out []string
	add := func(n string) {
		if n != ci.Name && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	for _, g := range ci.GlobalReach {
		add(g)
	}
	for _, o := range c.p.spec.Circuits {
		if slices.Contains(o.GlobalReach, ci.Name) {
			add(o.Name)
		}
	}
	sort.Strings(out)
	return out
}

func checkER03(c *checkCtx) {
	type worst struct {
		n     int
		when  string
		names []string
	}
	worstBy := map[string]worst{}
	for _, m := range c.timeline() {
		per := map[string][]string{}
		for _, cn := range m.conns {
			if cn.Circuit != nil {
				per[cn.Circuit.Name] = append(per[cn.Circuit.Name], cn.ID())
			}
		}
		for name, ids := range per {
			if len(ids) > worstBy[name].n {
				worstBy[name] = worst{len(ids), m.when(), ids}
			}
		}
	}
	for i := range c.p.spec.Circuits {
		ci := &c.p.spec.Circuits[i]
		gr := c.globalReachPeers(ci)
		w := worstBy[ci.Name]
		total := w.n + len(gr)
		if limit := linkLimit(ci); total > limit {
			c.report(circuitID(ci.Name), fmt.Sprintf("raise circuits[%s] to Premium (or a larger Premium bandwidth), or connect fewer VNets (move spokes behind one hub)", ci.Name),
				"circuit %s (%s, %d Mbps) allows %d VNet links but has %d %s: %s and %s",
				ci.Name, ci.Tier, ci.BandwidthMbps, limit, total, orNow(w.when), count(w.n, "connection"), count(len(gr), "Global Reach link"))
		}
	}
}

// count writes n things, singular or plural.
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func orNow(when string) string {
	if when == "" {
		return "as declared"
	}
	return when
}

// overlapping returns the first overlap of two connections' advertised
// prefixes.
func overlapping(a, b *Connection) (netip.Prefix, netip.Prefix, bool) {
	return prefixesOverlap(advertised(a), advertised(b))
}

// sharedPrefixes lists the prefixes of b that overlap a prefix of a.
func sharedPrefixes(a, b []netip.Prefix) string {
	var out []string
	for _, y := range b {
		for _, x := range a {
			if x.Overlaps(y) && !slices.Contains(out, y.String()) {
				out = append(out, y.String())
			}
		}
	}
	return strings.Join(out, ", ")
}

func checkER04(c *checkCtx) {
	seen := map[string]bool{}
	for _, m := range c.timeline() {
		for i, a := range m.conns {
			for _, b := range m.conns[i+1:] {
				if a.Circuit == nil || b.Circuit != a.Circuit || a.Gateway == nil || b.Gateway == nil || a.Gateway.VNet == b.Gateway.VNet {
					continue
				}
				_, _, ok := overlapping(a, b)
				if !ok || seen[pairKey(a.ID(), b.ID())] {
					continue
				}
				seen[pairKey(a.ID(), b.ID())] = true
				// Name the target-side connection: it is the one to move.
				if a.Site.Role == "target" && b.Site.Role != "target" {
					a, b = b, a
				}
				scope := ScopeFailover
				hint := "delete the target connection from " + c.targetNetPath() + ".connections: the runbook then connects the target only after it disconnects the source"
				if a.Site.Role == "source" && b.Site.Role == "source" {
					scope = ScopeSource
					hint = "give the hubs address spaces that do not overlap, or connect them to different circuits"
				} else if a.Site.Role == "target" && b.Site.Role == "target" {
					scope = ScopeTarget
					hint = "connect only one of the two target hubs to the circuit"
				} else if !c.p.SameIPs() {
					hint = "change the addressTranslation pairs so that the target prefixes do not overlap the source, or connect the target to another circuit"
				}
				c.reportAs(SevError, scope, b.ID(), hint,
					"%s and %s are both connected to circuit %s %s, and their hubs advertise overlapping prefixes (%s and %s)",
					b.ID(), a.ID(), a.Circuit.Name, m.when(), sharedPrefixes(advertised(a), advertised(b)), sharedPrefixes(advertised(b), advertised(a)))
			}
		}
	}
}

// erGatewayLimit is how many circuits a gateway SKU connects.
func erGatewayLimit(sku string) int {
	switch sku {
	case "HighPerformance", "ErGw2AZ":
		return 8
	case "UltraPerformance", "ErGw3AZ", "ErGwScale":
		return 16
	}
	return 4
}

func checkER05(c *checkCtx) {
	for _, st := range c.sites() {
		for _, v := range st.VNets {
			g := v.ERGateway()
			if g == nil {
				continue
			}
			byLoc := map[string][]string{}
			var circuits []string
			for _, cn := range st.Connections {
				if cn.Gateway == nil || cn.Gateway.VNet != v || cn.Circuit == nil || slices.Contains(circuits, cn.Circuit.Name) {
					continue
				}
				circuits = append(circuits, cn.Circuit.Name)
				loc := strings.ToLower(cn.Circuit.PeeringLocation)
				byLoc[loc] = append(byLoc[loc], cn.Circuit.Name)
			}
			for _, loc := range sortedKeys(byLoc) {
				names := byLoc[loc]
				sort.Strings(names)
				where := c.p.spec.Circuit(names[0]).PeeringLocation
				switch {
				case len(names) > 4:
					c.reportAs(SevError, scopeOf(st), g.ID(), "connect at most 4 circuits of one peering location to a VNet; use circuits at other locations",
						"virtual network %s connects %d circuits from %s (%s); Azure allows at most 4 from one peering location", v.ID(), len(names), where, strings.Join(names, ", "))
				case len(names) > 1:
					c.reportAs(SevWarning, scopeOf(st), g.ID(), "connect the VNet to circuits at different peering locations (Site Recovery's guide forbids two circuits of one location on one VNet)",
						"virtual network %s connects %d circuits from %s (%s): a location outage takes them all, so this is not geo-redundant", v.ID(), len(names), where, strings.Join(names, ", "))
				}
			}
			if limit := erGatewayLimit(g.Sku); len(circuits) > limit {
				hint := "use a larger gateway SKU (HighPerformance/ErGw2AZ: 8 circuits, UltraPerformance/ErGw3AZ: 16) or connect fewer circuits"
				if st.Role == "target" && c.p.generated[g.ID()] {
					hint = "set recovery.networkMapping.connectivity.gatewaySku to HighPerformance/ErGw2AZ (8 circuits) or UltraPerformance/ErGw3AZ (16), or name fewer circuits"
				}
				c.reportAs(SevError, scopeOf(st), g.ID(), hint,
					"gateway %s (%s) connects %d circuits; its SKU allows %d", g.ID(), g.Sku, len(circuits), limit)
			}
		}
	}
}

func checkER06(c *checkCtx) {
	created := map[string]string{} // connection ID -> phase it is created in
	for _, a := range c.p.Runbook {
		if a.Action == ActCreateConn && created[a.Resource] == "" {
			created[a.Resource] = a.Phase
		}
	}
	seen := map[string]bool{}
	for _, m := range c.timeline() {
		for _, cn := range m.conns {
			if seen[cn.ID()] || cn.Circuit == nil {
				continue
			}
			seen[cn.ID()] = true
			adv := advertised(cn)
			scope := scopeOf(cn.Site)
			switch {
			case len(adv) > 1000:
				c.reportAs(SevError, scope, cn.ID(), "summarise the hub and spoke address spaces into fewer, larger prefixes, or split the spokes across hubs",
					"the hub of %s advertises %d prefixes over circuit %s; a connection carries at most 1,000 IPv4 prefixes from Azure", cn.ID(), len(adv), cn.Circuit.Name)
			case len(adv) > 200 && created[cn.ID()] != "":
				c.reportAs(SevError, scope, cn.ID(), "summarise the hub and spoke address spaces into fewer prefixes before the connection is made, or split the spokes across hubs",
					"the runbook creates %s %s while its hub and spokes hold %d address spaces; a connection is refused when more than 200 VNet address spaces are advertised at creation", cn.ID(), phaseWords[created[cn.ID()]], len(adv))
			}
		}
	}
	for i := range c.p.spec.Circuits {
		ci := &c.p.spec.Circuits[i]
		limit := 4000
		if ci.Tier == "Premium" {
			limit = 10000
		}
		if n := c.onPremPrefixCount(ci); n > limit {
			c.report(circuitID(ci.Name), "summarise the on-premises advertisements, or raise the circuit to Premium (10,000 prefixes)",
				"on-premises advertises %d prefixes over circuit %s (%s); the limit is %d", n, ci.Name, ci.Tier, limit)
		}
	}
}

func checkER07(c *checkCtx) {
	for i := range c.p.spec.Circuits {
		ci := &c.p.spec.Circuits[i]
		pp := ci.PrivatePeering
		if pp == nil {
			continue
		}
		hit := map[string]bool{} // source VNet IDs that overlapped
		for _, st := range c.sites() {
			for _, v := range st.VNets {
				for _, pr := range []spec.Prefix{pp.PrimaryPeerAddressPrefix, pp.SecondaryPeerAddressPrefix} {
					if !pr.IsValid() {
						continue
					}
					for _, sp := range v.AddressSpace {
						if !pr.Overlaps(sp) {
							continue
						}
						if st.Role == "target" && hit[c.sourceOf(v.ID())] {
							continue
						}
						hit[v.ID()] = true
						hint := fmt.Sprintf("change circuits[%s].privatePeering to /30s outside every VNet", ci.Name)
						if st.Role == "target" && !c.p.SameIPs() {
							hint += ", or translate the VNet to another range"
						}
						c.reportAs(SevError, scopeOf(st), circuitID(ci.Name), hint,
							"private peering prefix %s of circuit %s overlaps virtual network %s (%s)", pr, ci.Name, v.ID(), sp)
					}
				}
			}
		}
	}
}

func checkER08(c *checkCtx) {
	geo := c.p.geo
	seen := map[string]bool{}
	for i := range c.p.spec.Circuits {
		a := &c.p.spec.Circuits[i]
		for _, name := range a.GlobalReach {
			b := c.p.spec.Circuit(name)
			if b == nil || seen[pairKey(a.Name, b.Name)] {
				continue
			}
			seen[pairKey(a.Name, b.Name)] = true
			aa, ba := geo.LocationArea(a.PeeringLocation), geo.LocationArea(b.PeeringLocation)
			if aa == "" || ba == "" {
				c.reportAs(SevInfo, c.rule.Scope, circuitID(a.Name), "add the peering locations to the geography data file, or check their spelling",
					"cannot tell whether Global Reach between %s (%s) and %s (%s) crosses geopolitical areas", a.Name, a.PeeringLocation, b.Name, b.PeeringLocation)
				continue
			}
			if aa == ba {
				continue
			}
			var std []string
			for _, x := range []*spec.Circuit{a, b} {
				if x.Tier != "Premium" {
					std = append(std, x.Name)
				}
			}
			if len(std) > 0 {
				c.report(circuitID(a.Name), fmt.Sprintf("set tier: Premium on %s", strings.Join(std, " and ")),
					"Global Reach between %s (%s, %s) and %s (%s, %s) crosses geopolitical areas and needs Premium on both; %s %s not Premium",
					a.Name, a.PeeringLocation, aa, b.Name, b.PeeringLocation, ba, strings.Join(std, " and "), map[bool]string{true: "is", false: "are"}[len(std) == 1])
			}
		}
	}
}

func checkER09(c *checkCtx) {
	for _, t := range c.p.Topology.TargetCircuits {
		if slices.Contains(c.p.Topology.SourceCircuits, t) {
			continue
		}
		tc := c.p.spec.Circuit(t)
		for _, s := range c.p.Topology.SourceCircuits {
			sc := c.p.spec.Circuit(s)
			if tc == nil || sc == nil || !SamePlace(tc.PeeringLocation, sc.PeeringLocation) {
				continue
			}
			c.report(circuitID(t), "connect the target hub to a circuit at another peering location (recovery.networkMapping.connectivity.circuits)",
				"the target circuit %s (%s) and the source circuit %s (%s) are at the same place: an outage there takes both, so the second circuit does not protect against it",
				t, tc.PeeringLocation, s, sc.PeeringLocation)
		}
	}
}

func checkER10(c *checkCtx) {
	type pair struct {
		s, t     *Connection
		sp, tp   netip.Prefix
		when     string
		afterToo bool
	}
	pairs := map[string]*pair{}
	var order []string
	for _, m := range c.timeline() {
		for _, s := range m.conns {
			if s.Site.Role != "source" {
				continue
			}
			for _, t := range m.conns {
				if t.Site.Role != "target" || s.Circuit == nil || t.Circuit == nil || s.Circuit == t.Circuit || s.Circuit.OnPremises != t.Circuit.OnPremises {
					continue
				}
				sp, tp, ok := overlapping(s, t)
				if !ok {
					continue
				}
				k := pairKey(s.ID(), t.ID())
				if pairs[k] == nil {
					pairs[k] = &pair{s: s, t: t, sp: sp, tp: tp, when: m.when()}
					order = append(order, k)
				}
				if m.phase == PhaseAfter && m.end {
					pairs[k].afterToo = true
				}
			}
		}
	}
	for _, k := range order {
		pr := pairs[k]
		s, t, sp, tp := pr.s, pr.t, pr.sp, pr.tp
		// A preference: different routing weights, or prefixes of
		// different length (the more specific wins).
		prefer := ""
		switch {
		case t.RoutingWeight > s.RoutingWeight:
			prefer = "target"
		case s.RoutingWeight > t.RoutingWeight:
			prefer = "source"
		case tp.Bits() > sp.Bits():
			prefer = "target"
		case sp.Bits() > tp.Bits():
			prefer = "source"
		}
		switch {
		case prefer == "":
			c.report(t.ID(), "give the connections different routingWeight values, advertise more specific prefixes from the side that should win, or prepend the AS path on the other; and switch the preference to the target as part of failover",
				"%s (circuit %s) and %s (circuit %s) are connected at the same time (%s) and advertise the same prefixes (%s) to %s with nothing to prefer one path: on-premises may send traffic to the side where the machines are not running",
				s.ID(), s.Circuit.Name, t.ID(), t.Circuit.Name, pr.when, sharedPrefixes(advertised(s), advertised(t)), s.Circuit.OnPremises)
		case prefer == "source" && pr.afterToo:
			c.report(t.ID(), "make the target path win after failover (a higher routingWeight on the target connection, or more specific prefixes), or let the runbook disconnect the source",
				"after failover %s is still connected and on-premises keeps preferring it over %s, so traffic to %s does not reach the recovered machines", s.ID(), t.ID(), tp)
		}
	}
}

func checkER11(c *checkCtx) {
	raise := c.p.spec.Recovery.NetworkMapping.Connectivity.RaiseBandwidthMbps
	maxSrc, maxName := 0, ""
	for _, name := range c.p.Topology.SourceCircuits {
		if sc := c.p.spec.Circuit(name); sc != nil && sc.BandwidthMbps > maxSrc {
			maxSrc, maxName = sc.BandwidthMbps, name
		}
	}
	for _, name := range c.p.Topology.TargetCircuits {
		tc := c.p.spec.Circuit(name)
		if tc == nil || slices.Contains(c.p.Topology.SourceCircuits, name) {
			continue
		}
		if raise > 0 && raise < tc.BandwidthMbps {
			c.report(circuitID(name), fmt.Sprintf("set recovery.networkMapping.connectivity.raiseBandwidthMbps to at least %d, or remove it", tc.BandwidthMbps),
				"raiseBandwidthMbps %d is below circuit %s's %d Mbps: a circuit's bandwidth can be raised but never lowered", raise, name, tc.BandwidthMbps)
			continue
		}
		if tc.BandwidthMbps >= maxSrc || raise >= maxSrc {
			continue
		}
		c.report(circuitID(name), fmt.Sprintf("raise circuits[%s].bandwidthMbps to %d now, or set recovery.networkMapping.connectivity.raiseBandwidthMbps: %d so the raise is planned (bandwidth can be raised, never lowered)", name, maxSrc, maxSrc),
			"standby circuit %s has %d Mbps, production circuit %s %d Mbps: unless it is raised before or during failover, the recovered site runs on less bandwidth (the runbook holds only a manual reminder)",
			name, tc.BandwidthMbps, maxName, maxSrc)
	}
}

func checkER12(c *checkCtx) {
	users := map[string][]*Connection{}
	for _, st := range c.sites() {
		for _, cn := range st.Connections {
			if cn.AuthorizationKey != "" {
				users[cn.AuthorizationKey] = append(users[cn.AuthorizationKey], cn)
			}
			ci := cn.Circuit
			if ci == nil {
				continue
			}
			sub := cn.SubscriptionID
			if sub == "" {
				if s := c.p.spec.Site(st.Name); s != nil && s.Azure != nil {
					sub = s.Azure.SubscriptionID
				}
			}
			if sub == "" || ci.SubscriptionID == "" || strings.EqualFold(sub, ci.SubscriptionID) || cn.AuthorizationKey != "" {
				continue
			}
			hint := fmt.Sprintf("redeem an authorization of circuit %s (from its owner) and set connections[%s].authorizationKey", ci.Name, cn.Name)
			if st.Role == "target" && c.p.generated[cn.ID()] {
				hint = fmt.Sprintf("declare the target gateway and its connection to %s in %s with the authorizationKey of an authorization on the circuit", ci.Name, c.targetNetPath())
			}
			c.reportAs(SevError, scopeOf(st), cn.ID(), hint,
				"connection %s is in subscription %s but circuit %s is in %s: a connection across subscriptions needs an authorizationKey", cn.Name, sub, ci.Name, ci.SubscriptionID)
		}
	}
	for _, key := range sortedKeys(users) {
		cs := users[key]
		sort.Slice(cs, func(i, j int) bool { return cs[i].ID() < cs[j].ID() })
		for _, cn := range cs[1:] {
			c.reportAs(SevError, scopeOf(cn.Site), cn.ID(), "create a new authorization on the circuit for each connection; an authorization key is redeemed once",
				"%s uses the authorization key that %s already redeemed", cn.ID(), cs[0].ID())
		}
	}
}
