package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/provider"
	"github.com/standby-dr/standby/internal/provider/netlab"
	"github.com/standby-dr/standby/internal/spec"
)

var (
	standbyOnce sync.Once
	standbyBin  string
	standbyErr  error
	buildDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// standbyBinary builds the standby binary once, for tests whose machines
// run "standby workload ledger".
func standbyBinary(t *testing.T) string {
	t.Helper()
	standbyOnce.Do(func() {
		buildDir, standbyErr = os.MkdirTemp("", "standby-bin-")
		if standbyErr != nil {
			return
		}
		standbyBin = filepath.Join(buildDir, "standby")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", standbyBin, "github.com/standby-dr/standby/cmd/standby").CombinedOutput()
		if err != nil {
			standbyErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if standbyErr != nil {
		t.Fatal(standbyErr)
	}
	return standbyBin
}

func needLabRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "the lab needs root"
	}
	for _, tool := range []string{"ip", "nft", "tc"} {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = "the lab needs " + tool
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

var labIfName = regexp.MustCompile(`^[pkgoch][0-9a-f]{8}$`)

func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.Split(f[1], "@")[0], ":"))
		}
	}
	return names
}

// TestLabUpCheckTraceDown builds the two-circuit example with lab up (the
// real binary, so that its VMs run the ledger), GETs the ledger's health
// from hq/client, traces through the NVA, runs a command in a namespace,
// and takes the lab down twice, leaving no namespace, link, mount,
// process or directory.
func TestLabUpCheckTraceDown(t *testing.T) {
	needLabRoot(t)
	bin := standbyBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The example under a name of its own, so that a lab someone runs by
	// hand is left alone.
	data, err := os.ReadFile(twoCircuits)
	if err != nil {
		t.Fatal(err)
	}
	lab := fmt.Sprintf("labtest-%d", rand.Int64())
	text := strings.Replace(string(data), "name: contoso-eastasia", "name: "+lab, 1)
	dir := t.TempDir()
	file := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	labDir := filepath.Join(dir, "lab")
	linksBefore := rootLinks(t)
	t.Cleanup(func() { netlab.Down(context.Background(), lab, labDir, time.Second) })

	start := time.Now()
	out, err := exec.CommandContext(ctx, bin, "lab", "up", "-f", file, "--dir", labDir, "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	var up LabUp
	if err := json.Unmarshal(out, &up); err != nil {
		t.Fatalf("lab up output: %v\n%s", err, out)
	}
	t.Logf("lab up with the ledgers healthy: %.2fs (%d namespaces)", time.Since(start).Seconds(), len(up.Namespaces))
	if up.Health["eastasia/app1"] != "healthy" || !slices.ContainsFunc(up.Namespaces, func(n netlab.Namespace) bool { return n.Node == "hq/client" }) {
		t.Fatalf("lab up: %+v", up)
	}

	// An HTTP GET from hq/client to the ledger, through the circuit.
	s, err := spec.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	o := netlab.ForSpec(s)
	o.Dir = labDir
	p, err := netlab.New(o)
	if err != nil {
		t.Fatal(err)
	}
	res, err := provider.WaitCheck(ctx, p, provider.Check{From: "hq/client", HTTP: "http://10.1.0.4:8080/health"}, 100*time.Millisecond)
	if err != nil || !res.OK {
		t.Fatalf("GET the ledger's health from hq/client: %+v %v", res, err)
	}

	// The real path crosses the NVA, and so does spoke to spoke.
	for _, c := range [][2]string{{"hq/client", "10.1.0.4"}, {"eastasia/app1", "10.2.0.4"}} {
		code, out, stderr := run(t, "lab", "trace", "-f", file, "--dir", labDir, "--from", c[0], "--to", c[1], "-o", "json")
		var tr netlab.Trace
		if code != ExitOK || json.Unmarshal([]byte(out), &tr) != nil || tr.Result != "delivered" || !slices.Contains(tr.Nodes(), "eastasia/hub-nva") {
			t.Errorf("lab trace %s -> %s: exit %d, %s %s", c[0], c[1], code, out, stderr)
		}
	}
	code, out2, stderr := run(t, "lab", "exec", "-f", file, "--dir", labDir, "hq/client", "--", "ip", "-o", "addr")
	if code != ExitOK || !strings.Contains(out2, "192.168.1.10/32") {
		t.Errorf("lab exec: exit %d: %s %s", code, out2, stderr)
	}
	if code, _, _ := run(t, "lab", "exec", "-f", file, "--dir", labDir, "nowhere/vm", "--", "true"); code != ExitBadInput {
		t.Errorf("lab exec in a node that does not exist: exit %d, want 2", code)
	}
	code, out2, _ = run(t, "lab", "status", "-f", file, "--dir", labDir, "-o", "json")
	var st LabStatus
	if code != ExitOK || json.Unmarshal([]byte(out2), &st) != nil || len(st.Namespaces) != len(up.Namespaces) {
		t.Errorf("lab status: exit %d: %s", code, out2)
	}

	// The machines' processes, to check that down leaves none.
	var pids []int
	for _, n := range st.Namespaces {
		if strings.Contains(n.Name, "-vm-") {
			b, _ := exec.Command("ip", "netns", "pids", n.Name).Output()
			for _, f := range strings.Fields(string(b)) {
				var pid int
				fmt.Sscan(f, &pid)
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) < 2 {
		t.Fatalf("machine processes: %v", pids)
	}

	start = time.Now()
	for i := range 2 {
		code, out, stderr := run(t, "lab", "down", "-f", file, "--dir", labDir, "-o", "json")
		var rm netlab.Removed
		if code != ExitOK || json.Unmarshal([]byte(out), &rm) != nil {
			t.Fatalf("lab down %d: exit %d: %s %s", i+1, code, out, stderr)
		}
		if i == 0 {
			t.Logf("lab down: %.2fs", time.Since(start).Seconds())
		}
		if i == 1 && (len(rm.Namespaces) != 0 || rm.Dir != "" || rm.Machines != 0) {
			t.Errorf("a second down did something: %+v", rm)
		}
	}
	ns, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(ns), netlab.Prefix(lab)) {
		t.Errorf("namespaces left:\n%s", ns)
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), netlab.Prefix(lab)) {
		t.Errorf("mounts left")
	}
	for _, l := range rootLinks(t) {
		if labIfName.MatchString(l) && !slices.Contains(linksBefore, l) {
			t.Errorf("link %s left in the root namespace", l)
		}
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z ") {
				t.Errorf("process %d left", pid)
			}
		}
	}
	if _, err := os.Stat(labDir); !os.IsNotExist(err) {
		t.Errorf("lab directory left: %v", err)
	}
}
