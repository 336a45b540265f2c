package replica

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
)

// The crash test re-executes the test binary as a child that applies point
// after point (and prunes, so undo files are merged and deleted), and kills
// it with SIGKILL at random moments. After each kill the replica is reopened
// and every listed point must read, verify and export to exactly the content
// it had when committed; the interrupted point is either listed and whole,
// or absent.

const (
	crashChildEnv = "STANDBY_REPLICA_CRASH_CHILD"
	crashBS       = 16 << 10
	crashSize     = 64*crashBS + 5000
	crashKills    = 100
)

var crashStart = time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)

// crashChanges are the extents of point seq: a function of seq alone, so the
// parent knows the content of every point without being told.
func crashChanges(seq uint64) []change {
	m := newModel(crashSize, crashBS)
	frac := 0.25
	if seq == 1 {
		frac = 0.9
	}
	return m.randomChanges(rand.New(rand.NewPCG(seq, 99)), frac)
}

func crashTime(seq uint64) time.Time { return crashStart.Add(time.Duration(seq) * 15 * time.Minute) }

var crashRetention = Retention{Window: 4 * time.Hour, Recent: 45 * time.Minute, Every: time.Hour}

// crashChild applies points to the replica in dir until killed. It prints
// "committed N" once Commit has returned for N.
func crashChild(dir string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clk := clock.NewFake(crashStart)
	r, err := Open(dir, Options{Clock: clk})
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	for {
		txn, err := r.Begin(ctx)
		if err != nil {
			return fail(err)
		}
		staged := map[int64]bool{}
		for _, e := range txn.Staged() {
			for off := e.Off; off < e.Off+e.Len; off += crashBS {
				staged[off] = true
			}
		}
		var todo []change
		for _, c := range crashChanges(txn.Seq()) {
			if !staged[c.off] {
				todo = append(todo, c)
			}
		}
		if err := writeChanges(ctx, txn, todo, 3); err != nil {
			return fail(err)
		}
		p, err := txn.Commit(ctx, PointMeta{Time: crashTime(txn.Seq())})
		if err != nil {
			return fail(err)
		}
		fmt.Printf("committed %d\n", p.Seq)
		clk.Set(p.Time)
		if _, err := r.Prune(ctx, crashRetention); err != nil {
			return fail(err)
		}
	}
}

// crashExpect computes the hash of every point's content up to seq.
type crashExpect struct {
	cur    []byte
	hashes [][32]byte // index seq
}

func (e *crashExpect) hash(seq uint64) [32]byte {
	for uint64(len(e.hashes)) <= seq {
		s := uint64(len(e.hashes))
		if s > 0 {
			for _, c := range crashChanges(s) {
				if c.data == nil {
					clear(e.cur[c.off : c.off+c.n])
				} else {
					copy(e.cur[c.off:], c.data)
				}
			}
		}
		e.hashes = append(e.hashes, blake3.Sum256(e.cur))
	}
	return e.hashes[seq]
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process 100 times")
	}
	dir := filepath.Join(t.TempDir(), "replica")
	r, err := Create(dir, crashSize, Options{BlockSize: crashBS})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	exp := &crashExpect{cur: make([]byte, crashSize)}
	// Exports go to memory when it can: their fsyncs are not what is tested.
	outDir := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "replica-crash"); err == nil {
		outDir = d
		defer os.RemoveAll(d)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var acked uint64
	stagedSeen, interruptedCommits, intents := 0, 0, 0
	for kill := 0; kill < crashKills; kill++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(5+rng.IntN(60)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: child ended with %v before it was killed:\n%s", kill, err, stderr.String())
		}
		sc := bufio.NewScanner(&stdout)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "committed "); ok {
				n, _ := strconv.ParseUint(s, 10, 64)
				acked = max(acked, n)
			}
		}

		if _, err := os.Stat(filepath.Join(dir, intentName)); err == nil {
			intents++ // killed while overwriting the base: Open finishes the apply
		}
		r, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("kill %d: %v", kill, err)
		}
		points := r.Points()
		newest := uint64(0)
		if len(points) > 0 {
			newest = points[len(points)-1].Seq
		}
		if newest < acked {
			t.Fatalf("kill %d: point %d was acknowledged, the newest listed is %d", kill, acked, newest)
		}
		if newest > acked {
			interruptedCommits++ // committed, killed before it said so: must be whole
		}
		if _, err := os.Stat(filepath.Join(dir, stagingDir)); err == nil {
			stagedSeen++
		}
		for _, p := range points {
			want := exp.hash(p.Seq)
			v, err := r.View(p.Seq)
			if err != nil {
				t.Fatalf("kill %d: %v", kill, err)
			}
			buf := make([]byte, crashSize)
			if _, err := v.ReadAt(buf, 0); err != nil {
				t.Fatalf("kill %d: %v", kill, err)
			}
			if blake3.Sum256(buf) != want {
				t.Fatalf("kill %d: view of point %d differs from its content at commit", kill, p.Seq)
			}
			if err := r.Verify(context.Background(), p.Seq); err != nil {
				t.Fatalf("kill %d: %v", kill, err)
			}
			out := filepath.Join(outDir, "out.img")
			if _, err := r.Export(context.Background(), p.Seq, out); err != nil {
				t.Fatalf("kill %d: %v", kill, err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if blake3.Sum256(b) != want {
				t.Fatalf("kill %d: export of point %d differs from its content at commit", kill, p.Seq)
			}
			os.Remove(out)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d kills: %d points acknowledged; %d kills left a staged point, %d an intent to finish, %d a point committed but not yet acknowledged",
		crashKills, acked, stagedSeen, intents, interruptedCommits)
	if acked < 10 {
		t.Fatalf("only %d points were committed in %d runs: the child is too slow to test much", acked, crashKills)
	}
}
