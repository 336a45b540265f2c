package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWorkloadLedger(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "data.img")
	run := func(timeout time.Duration, args ...string) (int, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var out, errb bytes.Buffer
		code := Main(ctx, args, strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run(300*time.Millisecond, "workload", "ledger", "--disk-path", disk, "--listen", "127.0.0.1:0", "--rate", "200/s", "--size", "1MiB")
	if code != ExitOK || !strings.Contains(out, "formatted") || !strings.Contains(out, "ledger stopped") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	code, out, _ = run(100*time.Millisecond, "workload", "ledger", "--disk-path", disk, "--listen", "127.0.0.1:0", "-o", "json")
	if code != ExitOK || !strings.Contains(out, `"lastSeq"`) || strings.Contains(out, `"formatted": true`) {
		t.Fatalf("exit %d, stdout: %s", code, out)
	}
	t.Setenv("STANDBY_DISK_DATA", "")
	for _, args := range [][]string{
		{"workload", "ledger", "--disk", "data"},
		{"workload", "ledger"},
		{"workload", "ledger", "--disk", "data", "--disk-path", disk},
		{"workload", "ledger", "--disk-path", disk, "--rate", "fast"},
		{"workload", "ledger", "--disk-path", disk, "--listen", "8080"},
	} {
		if code, _, errs := run(time.Second, args...); code != ExitBadInput {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitBadInput, errs)
		}
	}
}
