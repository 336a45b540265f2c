package daemon_test

import (
	"context"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/spec"
)

// A policy that asks for scan capture: the machines run on their disk
// files themselves, each point scans them, and a drill boots and cleans up
// all the same.
func TestScanCapture(t *testing.T) {
	bin := standbyBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := quickstart()
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Protection.Policies {
		s.Protection.Policies[i].Capture = spec.CaptureScan
	}
	dir := t.TempDir()
	d, err := daemon.Open(ctx, daemon.Options{Spec: s, Dir: dir, Executable: bin, Lab: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer stopAll(t, d)
	if err := d.StartSites(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Protect(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range d.Health() {
		if h.Capture != spec.CaptureScan || h.State != "protected" || h.LastPoint != 1 {
			t.Errorf("%s: %+v, want protected by scan at point 1", h.VM, h)
		}
	}
	def := d.Sites.(provider.Definer)
	for _, vm := range []string{"app1", "app2"} {
		m, _, ok, err := def.Machine(ctx, "eastasia", vm)
		if err != nil || !ok {
			t.Fatalf("machine %s: %v %v", vm, ok, err)
		}
		for _, disk := range m.Disks {
			if disk.Path != d.DiskPath(vm, disk.Name) {
				t.Errorf("%s runs on %s, want its disk file %s", vm, disk.Path, d.DiskPath(vm, disk.Name))
			}
		}
		if res, err := d.Protector.Cut(ctx, vm, "", nil); err != nil || res.Point.Seq != 2 {
			t.Errorf("%s: a second point %+v %v", vm, res.Point, err)
		}
	}
	dj, err := d.Planner.Drill("contoso-app")
	if err != nil {
		t.Fatal(err)
	}
	drill, err := d.Run(ctx, dj)
	if err != nil || drill.Status != api.StatusSucceeded {
		t.Fatalf("drill: %v %s", err, drill.Status)
	}
	cj, err := d.Planner.DrillCleanup("contoso-app", drill.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cl, err := d.Run(ctx, cj); err != nil || cl.Status != api.StatusSucceeded {
		t.Fatalf("cleanup: %v %s", err, cl.Status)
	}
}
