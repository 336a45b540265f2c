package spec

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func example(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/hub-spoke-two-circuits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Each bad spec gives a clear error naming the line and the field path.
func TestBadSpecs(t *testing.T) {
	base := example(t)
	cases := []struct {
		name    string
		edit    func(string) string
		path    string // the field path the error must name
		message string // a part of the message
	}{
		{"unknown field", func(s string) string {
			return strings.Replace(s, "    region: eastasia\n", "    region: eastasia\n    regoin: eastasia\n", 1)
		}, "sites[0].regoin", "unknown field"},
		{"bad CIDR", func(s string) string {
			return strings.Replace(s, "addressSpace: [10.1.0.0/24]", "addressSpace: [10.1.0.0/33]", 1)
		}, "networks[0].virtualNetworks[1].addressSpace[0]", "not a CIDR"},
		{"host bits set", func(s string) string {
			return strings.Replace(s, "addressPrefix: 10.1.0.0/24", "addressPrefix: 10.1.0.1/24", 1)
		}, "networks[0].virtualNetworks[1].subnets[0].addressPrefix", "host bits"},
		{"IPv4-mapped", func(s string) string {
			return strings.Replace(s, "ipAddress: 10.1.0.4", "ipAddress: \"::ffff:10.1.0.4\"", 1)
		}, "protection.virtualMachines[0].nics[0].ipAddress", "IPv4-mapped"},
		{"dangling peering", func(s string) string {
			return strings.Replace(s, "{name: spoke1-to-hub, from: spoke1-vnet, to: hub-vnet,", "{name: spoke1-to-hub, from: spoke1-vnet, to: hub-vnet2,", 1)
		}, "networks[0].peerings[0].to", "hub-vnet2"},
		{"dangling plan VM", func(s string) string {
			return strings.Replace(s, "virtualMachines: [app2]", "virtualMachines: [app3]", 1)
		}, "recovery.plans[0].groups[0].virtualMachines[0]", "app3"},
		{"dangling connection circuit", func(s string) string {
			return strings.Replace(s, "circuit: er-hongkong, routingWeight", "circuit: er-tokyo, routingWeight", 1)
		}, "networks[0].connections[0].circuit", "er-tokyo"},
		{"duplicate VNet name", func(s string) string {
			return strings.Replace(s, "      - name: spoke2-vnet\n", "      - name: spoke1-vnet\n", 1)
		}, "networks[0].virtualNetworks[2].name", "duplicate"},
		{"duplicate circuit", func(s string) string {
			return strings.Replace(s, "  - name: er-singapore\n", "  - name: er-hongkong\n", 1)
		}, "circuits[1].name", "duplicate"},
		{"route table from another site", func(s string) string {
			s = strings.Replace(s, "  - site: southeastasia\n    virtualNetworks: []", "  - site: southeastasia\n    virtualNetworks: []\n    routeTables:\n      - name: dr-rt\n        routes: []", 1)
			return strings.Replace(s, "routeTable: spoke-rt\n            serviceEndpoints: [Microsoft.Storage]\n      - name: spoke2-vnet", "routeTable: dr-rt\n            serviceEndpoints: [Microsoft.Storage]\n      - name: spoke2-vnet", 1)
		}, "networks[0].virtualNetworks[1].subnets[0].routeTable", "dr-rt"},
		{"wrong type", func(s string) string {
			return strings.Replace(s, "uploadThreadsPerVM: 4", "uploadThreadsPerVM: four", 1)
		}, "protection.policies[0].uploadThreadsPerVM", "whole number"},
		{"threads out of range", func(s string) string {
			return strings.Replace(s, "uploadThreadsPerVM: 4", "uploadThreadsPerVM: 64", 1)
		}, "protection.policies[0].uploadThreadsPerVM", "1-32"},
		{"bad duration", func(s string) string {
			return strings.Replace(s, "rpoThreshold: 30m", "rpoThreshold: soon", 1)
		}, "protection.policies[0].rpoThreshold", "duration"},
		{"bad enum", func(s string) string {
			return strings.Replace(s, "tier: Standard", "tier: Gold", 1)
		}, "circuits[0].tier", "Gold"},
		{"subnet outside VNet", func(s string) string {
			return strings.Replace(s, "addressPrefix: 10.2.0.0/24", "addressPrefix: 10.3.0.0/24", 1)
		}, "networks[0].virtualNetworks[2].subnets[0].addressPrefix", "outside"},
		{"wrong version", func(s string) string {
			return strings.Replace(s, "version: 1", "version: 2", 1)
		}, "version", "not supported"},
		{"not YAML", func(s string) string { return "sites: [\n  - {name: a" }, "", "not valid YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(c.edit(base)))
			if err == nil {
				t.Fatal("want an error")
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("want spec.Errors, got %T %v", err, err)
			}
			found := false
			for _, e := range es {
				if e.Path == c.path && strings.Contains(e.Error(), c.message) {
					found = true
					if e.Line == 0 {
						t.Errorf("error without a line: %v", e)
					}
					if !strings.HasPrefix(e.Error(), "bad.yaml:") {
						t.Errorf("error does not name the file: %v", e)
					}
				}
			}
			if !found {
				t.Errorf("want an error at %q mentioning %q, got:\n%v", c.path, c.message, err)
			}
		})
	}
}

func TestGarbageFiles(t *testing.T) {
	dir := t.TempDir()
	rnd := rand.New(rand.NewSource(1))
	big := make([]byte, 10<<20)
	rnd.Read(big)
	cases := map[string][]byte{
		"garbage-10mb.yaml": big,
		"garbage-1mb.yaml":  big[:1<<20],
		"empty.yaml":        {},
		"list.yaml":         []byte("- a\n- b\n"),
		"nul.yaml":          []byte("version: 1\x00\n"),
		"deep.yaml":         []byte(strings.Repeat("[", 5000)),
		"aliases.yaml":      []byte("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("want a spec error, got %v", err)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a missing file: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	s, err := Parse("d.yaml", []byte(`version: 1
name: d
sites: [{name: a, region: eastasia, provider: local}, {name: b, region: southeastasia, provider: local}]
protection:
  policies: [{name: p}, {name: q, crashConsistentFrequency: 0s}]
  virtualMachines: [{name: vm, site: a, policy: p, disks: [{name: data, sizeGiB: 1}]}]
recovery: {targetSite: b}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := s.Protection.Policies[0]
	if p.RecoveryPointRetention.Hours() != 24 || p.CrashConsistentFrequency.Minutes() != 5 || p.UploadThreadsPerVM != 4 || p.RPOThreshold.Minutes() != 30 || p.Capture != "tracked" || p.BlockSize != 4<<20 {
		t.Errorf("policy defaults: %+v", p)
	}
	if q := s.Protection.Policies[1]; q.CrashConsistentFrequency.Duration != 0 {
		t.Errorf("an explicit 0s (continuous) must stay 0, got %s", q.CrashConsistentFrequency)
	}
	if s.Protection.VirtualMachines[0].Disks[0].Size != 1<<30 {
		t.Errorf("sizeGiB: %d", s.Protection.VirtualMachines[0].Disks[0].Size)
	}
	nm := s.Recovery.NetworkMapping
	if nm.Addressing != "same" || nm.Suffix() != "-asr" || !nm.Connectivity.Provision() || nm.TestNetwork.Addressing != "translate" {
		t.Errorf("mapping defaults: %+v", nm)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example(f)))
	f.Add([]byte("version: 1\nname: x\n"))
	f.Add([]byte("sites: [{name: a, region: r, provider: local}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err == nil && s == nil {
			t.Fatal("nil spec without error")
		}
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error of type %T: %v", err, err)
			}
		}
	})
}

func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a: &a [x, x, x, x, x, x, x, x, x, x]\n")
	prev := "a"
	for i := 0; i < 8; i++ {
		name := fmt.Sprintf("l%d", i)
		fmt.Fprintf(&b, "%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", name, name, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = name
	}
	start := time.Now()
	_, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("want an error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("an alias bomb took %s", d)
	}
}
