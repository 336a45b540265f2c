package workload

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "STANDBY_LEDGER_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(crashChild(path))
	}
	os.Exit(m.Run())
}

// crashChild appends batches as fast as it can, writing each record in two
// halves, and prints the last sequence once each batch is synced, until it
// is killed.
func crashChild(path string) int {
	l, err := OpenLedger(path, LedgerOptions{tearPause: 100 * time.Microsecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Printf("recovered %d\n", l.Recovery().LastSeq)
	for i := 0; ; i++ {
		if err := l.Append(context.Background(), 1+i%7); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		fmt.Printf("synced %d\n", l.Stats().LastSeq)
	}
}

// TestLedgerSurvivesKill kills a writing ledger at random moments and checks
// that every record it acknowledged as synced is recovered, on a ring small
// enough to wrap several times.
func TestLedgerSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(path, make([]byte, HeaderSize+300*SlotSize), 0o644); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	torn, prev := 0, uint64(0)
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked, started := make(chan uint64, 1), make(chan struct{})
		go func() {
			var last uint64
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "synced "); ok {
					last, _ = strconv.ParseUint(v, 10, 64)
				} else if strings.HasPrefix(sc.Text(), "recovered ") {
					close(started)
				}
			}
			acked <- last
		}()
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatal("the writer did not start")
		}
		time.Sleep(time.Duration(10+rng.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		last := max(<-acked, prev)
		cmd.Wait()

		l, err := OpenLedger(path, LedgerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r := l.Recovery()
		torn += r.TornSkipped
		t.Logf("round %d: acknowledged %d, recovered %d-%d, skipped %d", round, last, r.FirstSeq, r.LastSeq, r.TornSkipped)
		if r.LastSeq < last {
			t.Fatalf("round %d: acknowledged record %d but recovered only up to %d", round, last, r.LastSeq)
		}
		if r.LastSeq > last+MaxBatch {
			t.Fatalf("round %d: recovered %d, beyond the batch after %d", round, r.LastSeq, last)
		}
		if err := l.Verify(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		prev = r.LastSeq
		l.Close()
	}
	t.Logf("torn records skipped over all rounds: %d", torn)
}
