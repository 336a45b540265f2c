package workload

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

func openT(t *testing.T, path string, size int64) *Ledger {
	t.Helper()
	l, err := OpenLedger(path, LedgerOptions{Size: size, Clock: clock.NewFake(time.Unix(1e9, 0))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendT(t *testing.T, l *Ledger, n int) {
	t.Helper()
	for n > 0 {
		k := min(n, MaxBatch)
		if err := l.Append(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
}

func slotOf(l *Ledger, seq uint64) int64 { return HeaderSize + int64((seq-1)%l.slots)*SlotSize }

func TestLedgerAppendReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.img")
	l := openT(t, path, 1<<20)
	if r := l.Recovery(); !r.Formatted || r.Count != 0 || r.Capacity != (1<<20-HeaderSize)/SlotSize {
		t.Fatalf("new ledger: %+v", r)
	}
	appendT(t, l, 30)
	l.Close()

	l = openT(t, path, 0)
	r := l.Recovery()
	if r.Formatted || r.Count != 30 || r.FirstSeq != 1 || r.LastSeq != 30 || r.TornSkipped != 0 {
		t.Fatalf("reopened: %+v", r)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	appendT(t, l, 5)
	if s := l.Stats(); s.Count != 35 || s.LastSeq != 35 {
		t.Fatalf("stats after more: %+v", s)
	}
}

// tornWrite writes the first half of what record seq would be.
func tornWrite(t *testing.T, l *Ledger, seq uint64, prev uint64) uint64 {
	t.Helper()
	b := make([]byte, SlotSize)
	sum := l.encode(b, seq, time.Unix(2e9, 0), prev)
	if _, err := l.f.WriteAt(b[:SlotSize/2], slotOf(l, seq)); err != nil {
		t.Fatal(err)
	}
	return sum
}

func TestLedgerTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.img")
	l := openT(t, path, 1<<20)
	appendT(t, l, 20)
	tornWrite(t, l, 21, l.lastSum)
	l.Close()

	if at, err := RecordTime(path, 20); err != nil || at.IsZero() {
		t.Errorf("record 20: %v %v", at, err)
	}
	if _, err := RecordTime(path, 21); err == nil {
		t.Error("the torn record 21 has a time")
	}
	// Inspecting finds what a restart would, and changes nothing.
	before, _ := os.ReadFile(path)
	in, err := InspectLedger(path)
	if err != nil || in.LastSeq != 20 || in.TornSkipped != 1 {
		t.Fatalf("inspect: %+v %v", in, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("inspecting the ledger changed its disk")
	}

	l = openT(t, path, 0)
	r := l.Recovery()
	if r.Count != 20 || r.LastSeq != 20 || r.TornSkipped != 1 || len(r.Skipped) != 1 {
		t.Fatalf("recovery: %+v", r)
	}
	if sk := r.Skipped[0]; sk.Slot != 20 || sk.Seq != 21 || !strings.Contains(sk.Reason, "torn") {
		t.Fatalf("skipped: %+v", sk)
	}
	appendT(t, l, 1) // continues right after the last complete record
	l.Close()

	l = openT(t, path, 0)
	if r := l.Recovery(); r.Count != 21 || r.TornSkipped != 0 {
		t.Fatalf("after repair: %+v", r)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestLedgerOrphanAfterTorn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.img")
	l := openT(t, path, 1<<20)
	appendT(t, l, 20)
	sum := tornWrite(t, l, 21, l.lastSum)
	b := make([]byte, SlotSize)
	l.encode(b, 22, time.Unix(2e9, 0), sum) // complete, linked to what 21 should have been
	if _, err := l.f.WriteAt(b, slotOf(l, 22)); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l = openT(t, path, 0)
	r := l.Recovery()
	if r.LastSeq != 20 || r.TornSkipped != 2 {
		t.Fatalf("recovery: %+v", r)
	}
	if !strings.Contains(r.Skipped[1].Reason, "cut off") || r.Skipped[1].Seq != 22 {
		t.Fatalf("orphan: %+v", r.Skipped)
	}
}

// A complete record left from before a restart does not link to the record
// written since in the slot before it.
func TestLedgerStaleRecordsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data.img")
	l := openT(t, path, 1<<20)
	appendT(t, l, 20)
	snap, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	appendT(t, l, 3)
	l.Close()
	later, _ := os.ReadFile(path)

	// Back to 20 records; the restarted ledger writes a different 21.
	if err := os.WriteFile(path, snap, 0o644); err != nil {
		t.Fatal(err)
	}
	l = openT(t, path, 0)
	l.clk.(*clock.Fake).Advance(time.Hour)
	appendT(t, l, 1)
	off22 := slotOf(l, 22)
	if _, err := l.f.WriteAt(later[off22:off22+2*SlotSize], off22); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l = openT(t, path, 0)
	if r := l.Recovery(); r.LastSeq != 21 || r.TornSkipped != 2 {
		t.Fatalf("recovery: %+v", r)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestLedgerWraps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.img")
	l := openT(t, path, HeaderSize+MinSlots*SlotSize)
	appendT(t, l, 600)
	if s := l.Stats(); s.Count != MinSlots || s.FirstSeq != 600-MinSlots+1 || s.LastSeq != 600 {
		t.Fatalf("stats: %+v", s)
	}
	tornWrite(t, l, 601, l.lastSum)
	l.Close()

	l = openT(t, path, 0)
	r := l.Recovery()
	// The torn 601 overwrote the oldest record, 345.
	if r.LastSeq != 600 || r.FirstSeq != 346 || r.Count != MinSlots-1 || r.TornSkipped != 1 {
		t.Fatalf("recovery: %+v", r)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	appendT(t, l, 100)
	l.Close()
	l = openT(t, path, 0)
	if r := l.Recovery(); r.LastSeq != 700 || r.Count != MinSlots || r.TornSkipped != 0 {
		t.Fatalf("after wrapping again: %+v", r)
	}
}

func TestLedgerRefusesOtherData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fs.img")
	b := make([]byte, 1<<20)
	copy(b[1024:], "a filesystem superblock")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenLedger(path, LedgerOptions{})
	if err == nil || !strings.Contains(err.Error(), "not a ledger") {
		t.Fatalf("got %v, want a refusal", err)
	}
	small := filepath.Join(t.TempDir(), "small.img")
	if _, err := OpenLedger(small, LedgerOptions{Size: 64 << 10}); err == nil || !strings.Contains(err.Error(), "at least") {
		t.Fatalf("small disk: got %v", err)
	}
}
