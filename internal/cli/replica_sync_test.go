package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runSync runs replica sync the way the command tree does, with -o json.
func runSync(t *testing.T, args ...string) (ReplicaSyncResult, int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, output: "json"}
	cmd := newReplicaSyncCmd(e)
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	var res ReplicaSyncResult
	if err == nil {
		if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
			t.Fatalf("output is not JSON: %v\n%s", jerr, out.String())
		}
	} else {
		errb.WriteString(err.Error())
	}
	return res, exitCode(err), errb.String()
}

func TestReplicaSyncCreatesThenShipsChanges(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	img := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	img = append(img, make([]byte, 1<<20)...)              // and 1 MiB of zeros
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "replica")
	res, code, stderr := runSync(t, "--source", src, "--replica", rdir, "--block-size", "64KiB", "--threads", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if res.Seq != 1 || !res.Created || res.BytesShipped != 1<<20 || res.Size != 2<<20 || res.BlockSize != 64<<10 {
		t.Fatalf("first sync: %+v", res)
	}
	img[5] = 'x'
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	res, code, stderr = runSync(t, "--source", src, "--replica", rdir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if res.Seq != 2 || res.Created || res.BytesShipped != 64<<10 || res.BytesRead != 2<<20 {
		t.Fatalf("second sync: %+v", res)
	}
}

func TestReplicaSyncBadInput(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "r")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--replica", rdir}, "--source"},
		{[]string{"--source", filepath.Join(dir, "missing"), "--replica", rdir}, "missing"},
		{[]string{"--source", src, "--replica", rdir, "--threads", "0"}, "--threads"},
		{[]string{"--source", src, "--replica", rdir, "--threads", "33"}, "--threads"},
		{[]string{"--source", src, "--replica", rdir, "--capture", "magic"}, "--capture"},
		{[]string{"--source", src, "--replica", rdir, "--block-size", "1000"}, "--block-size"},
		{[]string{"--source", src, "--replica", rdir, "--block-size", "lots"}, "--block-size"},
	} {
		_, code, stderr := runSync(t, tc.args...)
		if code != ExitBadInput || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 naming %s", tc.args, code, stderr, tc.want)
		}
	}
	if _, err := os.Stat(rdir); err == nil {
		t.Error("bad input created a replica")
	}
	// An existing replica keeps its block size.
	if _, code, stderr := runSync(t, "--source", src, "--replica", rdir, "--block-size", "64KiB"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, code, stderr := runSync(t, "--source", src, "--replica", rdir, "--block-size", "128KiB"); code != ExitBadInput || !strings.Contains(stderr, "fixed") {
		t.Errorf("a different block size: exit %d, %q", code, stderr)
	}
}

func TestParseBlockSize(t *testing.T) {
	for in, want := range map[string]int64{"4MiB": 4 << 20, "4m": 4 << 20, "64KiB": 64 << 10, "65536": 65536, "1GiB": 1 << 30} {
		if got, err := parseBlockSize(in); err != nil || got != want {
			t.Errorf("parseBlockSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-4MiB", "4000", "2GiB", "x"} {
		if _, err := parseBlockSize(in); err == nil {
			t.Errorf("parseBlockSize(%q) accepted", in)
		}
	}
}
