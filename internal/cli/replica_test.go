package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/replica"
)

// makeReplica builds a replica of a 1 MiB disk with two points and returns
// its directory and the content of each point.
func makeReplica(t *testing.T) (string, [][]byte) {
	t.Helper()
	const bs = 64 << 10
	dir := filepath.Join(t.TempDir(), "r")
	r, err := replica.Create(dir, 16*bs, replica.Options{BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	cur := make([]byte, 16*bs)
	var contents [][]byte
	for i, blocks := range [][]int64{{0, 1, 2, 7}, {1, 9}} {
		txn, err := r.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, blk := range blocks {
			data := bytes.Repeat([]byte{byte(10*i + int(blk) + 1)}, bs)
			if err := txn.WriteExtent(ctx, blk*bs, data, blake3.Sum256(data)); err != nil {
				t.Fatal(err)
			}
			copy(cur[blk*bs:], data)
		}
		if _, err := txn.Commit(ctx, replica.PointMeta{Time: time.Now().Add(time.Duration(i-2) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		contents = append(contents, bytes.Clone(cur))
	}
	return dir, contents
}

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func TestReplicaCommands(t *testing.T) {
	dir, contents := makeReplica(t)

	out, stderr, code := runCLI(t, "replica", "points", "--replica", dir, "-o", "json")
	var pts ReplicaPointsResult
	if code != 0 || json.Unmarshal([]byte(out), &pts) != nil || len(pts.Points) != 2 || pts.Points[1].Seq != 2 {
		t.Fatalf("points: exit %d, %s %s", code, out, stderr)
	}
	out, _, code = runCLI(t, "replica", "points", "--replica", dir)
	if code != 0 || !strings.Contains(out, "2 points") || !strings.Contains(out, "SEQ") {
		t.Fatalf("points text: exit %d\n%s", code, out)
	}

	out, stderr, code = runCLI(t, "replica", "verify", "--replica", dir, "-o", "json")
	var ver ReplicaVerifyResult
	if code != 0 || json.Unmarshal([]byte(out), &ver) != nil || !ver.OK || len(ver.Points) != 2 {
		t.Fatalf("verify: exit %d, %s %s", code, out, stderr)
	}

	for i, c := range contents {
		img := filepath.Join(t.TempDir(), "out.img")
		seq := []string{"1", "latest"}[i]
		out, stderr, code = runCLI(t, "replica", "export", "--replica", dir, "--point", seq, "--out", img, "-o", "json")
		var ex ReplicaExportResult
		if code != 0 || json.Unmarshal([]byte(out), &ex) != nil || ex.Seq != uint64(i+1) {
			t.Fatalf("export %s: exit %d, %s %s", seq, code, out, stderr)
		}
		got, _ := os.ReadFile(img)
		if !bytes.Equal(got, c) {
			t.Fatalf("export of point %d differs", i+1)
		}
	}

	// With --source, the differing blocks are listed and the exit is 1.
	src := filepath.Join(t.TempDir(), "src.img")
	os.WriteFile(src, contents[0], 0o644)
	out, _, code = runCLI(t, "replica", "verify", "--replica", dir, "--source", src)
	if code != 1 || !strings.Contains(out, "differs from") {
		t.Fatalf("verify against another point's source: exit %d\n%s", code, out)
	}
	if _, _, code = runCLI(t, "replica", "verify", "--replica", dir, "--point", "1", "--source", src); code != 0 {
		t.Fatalf("verify point 1 against its source: exit %d", code)
	}

	// Pins and prune: point 1 is two hours old and goes, unless pinned.
	if _, stderr, code = runCLI(t, "replica", "pin", "--replica", dir, "--point", "1"); code != 0 {
		t.Fatalf("pin: exit %d %s", code, stderr)
	}
	out, _, code = runCLI(t, "replica", "prune", "--replica", dir, "--retention", "1h", "-o", "json")
	var pr ReplicaPruneResult
	if code != 0 || json.Unmarshal([]byte(out), &pr) != nil || len(pr.Dropped) != 0 {
		t.Fatalf("prune with a pin: exit %d %s", code, out)
	}
	runCLI(t, "replica", "pin", "--replica", dir, "--point", "1", "--off")
	out, _, code = runCLI(t, "replica", "prune", "--replica", dir, "--retention", "1h", "--dry-run")
	if code != 0 || !strings.Contains(out, "would remove 1 point") {
		t.Fatalf("prune --dry-run: exit %d\n%s", code, out)
	}
	out, _, code = runCLI(t, "replica", "prune", "--replica", dir, "--retention", "1h", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &pr) != nil || len(pr.Dropped) != 1 || pr.Dropped[0] != 1 {
		t.Fatalf("prune: exit %d %s", code, out)
	}

	// Damage: verify and export exit 1 and name the file.
	f, _ := os.OpenFile(filepath.Join(dir, "base"), os.O_RDWR, 0)
	f.WriteAt([]byte{0xee}, 9*64<<10+3)
	f.Close()
	out, _, code = runCLI(t, "replica", "verify", "--replica", dir)
	if code != 1 || !strings.Contains(out, "DAMAGED") || !strings.Contains(out, "in base") {
		t.Fatalf("verify of a damaged base: exit %d\n%s", code, out)
	}
	img := filepath.Join(t.TempDir(), "bad.img")
	_, stderr, code = runCLI(t, "replica", "export", "--replica", dir, "--point", "2", "--out", img)
	if code != 1 || !strings.Contains(stderr, "base") {
		t.Fatalf("export of a damaged point: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(img); err == nil {
		t.Fatal("a refused export left its file")
	}
}

func TestReplicaCommandsBadInput(t *testing.T) {
	dir, _ := makeReplica(t)
	for _, args := range [][]string{
		{"replica", "points"},
		{"replica", "points", "--replica", t.TempDir()},
		{"replica", "export", "--replica", dir, "--out", "x.img"},
		{"replica", "export", "--replica", dir, "--point", "7", "--out", "x.img"},
		{"replica", "verify", "--replica", dir, "--point", "x"},
		{"replica", "prune", "--replica", dir, "--retention", "0s"},
		{"replica", "nonsense"},
	} {
		if _, stderr, code := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
}
