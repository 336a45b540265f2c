package netlab_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/provider/providertest"
	"github.com/standby-dr/standby/internal/spec"
)

func TestMain(m *testing.M) {
	providertest.ServeVMIfAsked()
	os.Exit(m.Run())
}

// needRoot skips a test that needs root and the network tools, unless
// STANDBY_TEST_REQUIRE_ALL=1 makes that a failure.
func needRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "netlab needs root"
	}
	for _, tool := range []string{"ip", "nft", "tc"} {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = "netlab needs " + tool
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("STANDBY_TEST_REQUIRE_ALL") == "1" {
		t.Fatal(why + " (STANDBY_TEST_REQUIRE_ALL=1)")
	}
	t.Skip(why)
}

// newLab returns a provider for a fresh lab that is taken down when the
// test ends, whatever happened.
func newLab(t *testing.T, o netlab.Options) *netlab.Provider {
	t.Helper()
	needRoot(t)
	o.Lab = fmt.Sprintf("test-%d", rand.Int64())
	o.Dir = filepath.Join(t.TempDir(), "lab")
	if o.StopGrace == 0 {
		o.StopGrace = 3 * time.Second
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		o.Executable = exe
	}
	p, err := netlab.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := netlab.Down(ctx, o.Lab, o.Dir, time.Second); err != nil {
			t.Errorf("down: %v", err)
		}
		if left, _ := filepath.Glob("/run/netns/" + netlab.Prefix(o.Lab) + "*"); len(left) > 0 {
			t.Errorf("namespaces left after down: %v", left)
		}
	})
	return p
}

// siteCircuits gives site-b's connections a circuit of their own. The
// suite connects two sites with the same addresses to one circuit, which
// Azure refuses (ER-04) and netlab refuses with it; with a circuit each,
// on-premises prefers the first site's on equal prefixes, as the suite's
// checks expect.
type siteCircuits struct{ provider.Provider }

func (w siteCircuits) CreateNetwork(ctx context.Context, job string, r provider.Resource) error {
	if r.Connection != nil && r.Site == providertest.SiteB {
		c := *r.Connection
		c.Circuit += "-b"
		r.Connection = &c
	}
	return w.Provider.CreateNetwork(ctx, job, r)
}

func TestLabConformance(t *testing.T) {
	needRoot(t)
	circuits := providertest.Circuits()
	b := circuits[0]
	b.Name += "-b"
	b.PeeringLocation = "Singapore"
	circuits = append(circuits, b)
	providertest.Run(t, func(t *testing.T) provider.Provider {
		return siteCircuits{newLab(t, netlab.Options{Circuits: circuits, OnPremises: providertest.OnPremises()})}
	})
}

// sleeper is a machine that only answers pings.
func sleeper(site, name string, nic spec.NIC) provider.VM {
	return provider.VM{Site: site, Name: name, NICs: []spec.NIC{nic}, Boot: spec.Boot{Command: []string{"sleep", "600"}}}
}
