package local_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/providertest"
	"github.com/standby-dr/standby/internal/spec"
	"github.com/standby-dr/standby/internal/workload"
)

const ledgerRole = "STANDBY_LOCALTEST_LEDGER" // the port to serve on

// runLedger is the ledger as a machine runs it (standby workload ledger
// --disk data --listen :PORT), without the command line around it.
func runLedger() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	path, err := workload.DiskPath("data", os.Getenv)
	if err == nil {
		var addr string
		addr, err = workload.ResolveListen(":"+os.Getenv(ledgerRole), os.Getenv)
		if err == nil {
			err = serveLedger(ctx, path, addr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

func serveLedger(ctx context.Context, path, addr string) error {
	l, err := workload.OpenLedger(path, workload.LedgerOptions{})
	if err != nil {
		return err
	}
	defer l.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	svc := workload.NewService(l, 500, nil)
	go http.Serve(ln, svc.Handler())
	return svc.Run(ctx)
}

func records(t *testing.T, addr string, port int) workload.Report {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s:%d/records", addr, port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r workload.Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

// The quickstart's story on one machine: the ledger runs at the source,
// its disk is copied while it writes (a crash-consistent recovery point),
// the source goes down, the recovery site boots the copy under the same IP,
// and the ledger there tells exactly how many records the point held.
func TestLedgerFailover(t *testing.T) {
	ctx := ctxT(t)
	p := newLocal(t, t.TempDir(), 3*time.Second)
	defer func() { stopAll(p); p.Close() }()
	pt, dir := port(), t.TempDir()
	client := providertest.OnPremises()[0].Hosts[0]
	if err := p.CreateNetwork(ctx, "job", provider.Resource{Site: providertest.OnPrem, Host: &client}); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	vm := func(site, disk string) provider.VM {
		return provider.VM{
			Site: site, Name: "app1",
			NICs:  []spec.NIC{{VirtualNetwork: "spoke1-vnet", Subnet: "app-subnet", IPAddress: spec.MustAddr("10.1.0.4")}},
			Disks: []provider.Disk{{Name: "data", Path: disk}},
			Boot:  spec.Boot{Command: []string{exe, "-test.run=^$"}, Env: map[string]string{ledgerRole: strconv.Itoa(pt)}},
		}
	}
	source, point := filepath.Join(dir, "source.img"), filepath.Join(dir, "point.img")
	if err := os.WriteFile(source, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.StartVM(ctx, "job", vm("eastasia", source)); err != nil {
		t.Fatal(err)
	}
	health := provider.Check{From: "hq/client", HTTP: fmt.Sprintf("http://10.1.0.4:%d/health", pt)}
	waitOK(t, ctx, p, health)
	items, _ := p.List(ctx, provider.Filter{Kind: provider.KindVM})
	for records(t, items[0].Address, pt).Count < 100 {
		time.Sleep(20 * time.Millisecond)
	}
	copyFile(t, source, point) // while it writes
	atPoint := records(t, items[0].Address, pt).LastSeq
	time.Sleep(100 * time.Millisecond)
	if err := p.StopVM(ctx, "eastasia", "app1"); err != nil {
		t.Fatal(err)
	}

	// What the point holds, read from a copy of it.
	probe := filepath.Join(dir, "probe.img")
	copyFile(t, point, probe)
	l, err := workload.OpenLedger(probe, workload.LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := l.Recovery()
	l.Close()

	if err := p.StartVM(ctx, "job", vm("southeastasia", point)); err != nil {
		t.Fatal(err)
	}
	waitOK(t, ctx, p, health)
	items, _ = p.List(ctx, provider.Filter{Kind: provider.KindVM})
	got := records(t, items[0].Address, pt).Recovered
	t.Logf("source acknowledged %d when the point was cut; the point holds %d records (skipped %d)", atPoint, got.LastSeq, got.TornSkipped)
	if got.Count != want.Count || got.LastSeq != want.LastSeq || got.TornSkipped != want.TornSkipped {
		t.Fatalf("recovered %+v, want %+v", got, want)
	}
	if got.LastSeq < 100 || got.LastSeq > atPoint || got.Disk != point || items[0].Site != "southeastasia" {
		t.Fatalf("recovered %+v at %s", got, items[0].Site)
	}
}
