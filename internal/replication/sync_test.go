package replication

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

const testBS = 64 << 10

func randomBytes(rng *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			p[i+k] = byte(v >> (8 * k))
		}
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	p, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return blake3.Sum256(p)
}

// TestSyncTwoPointsExportBoth syncs a 32 MiB image, rewrites 1% of its
// blocks and zeroes one, syncs again, and exports both points: each export
// must equal the source as it was, and the second sync must ship only the
// rewritten blocks.
func TestSyncTwoPointsExportBoth(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	rng := rand.New(rand.NewPCG(1, 2))
	const size = 32 << 20
	img := make([]byte, size)
	randomBytes(rng, img[:12<<20])                                    // random
	copy(img[16<<20:], strings.Repeat("standby ledger row;", 300000)) // text-like
	// the rest stays zero
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	want1 := blake3.Sum256(img)

	clk := clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	r, err := replica.Create(filepath.Join(dir, "replica"), size, replica.Options{BlockSize: testBS, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var lastDone, lastTotal int64
	opts := Options{Threads: 4, Clock: clk, Progress: func(d, tot int64) { lastDone, lastTotal = d, tot }}

	res1, err := Sync(context.Background(), src, Local(r), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res1.Point.Seq != 1 || res1.Full {
		t.Fatalf("first sync: point %d, full %v (%s)", res1.Point.Seq, res1.Full, res1.Reason)
	}
	if lastDone != size || lastTotal != size {
		t.Errorf("progress ended at %d of %d", lastDone, lastTotal)
	}
	nonZero := int64(0)
	for off := int64(0); off < size; off += testBS {
		if blake3.Sum256(img[off:off+testBS]) != blake3.Sum256(make([]byte, testBS)) {
			nonZero += testBS
		}
	}
	if res1.BytesShipped != nonZero {
		t.Errorf("first sync shipped %d bytes, want the %d non-zero bytes", res1.BytesShipped, nonZero)
	}

	// Rewrite 1% of the blocks (5 of 512) and zero one more.
	clk.Advance(time.Minute)
	changed := map[int64]bool{}
	for len(changed) < 5 {
		changed[int64(rng.IntN(size/testBS))] = true
	}
	for blk := range changed {
		randomBytes(rng, img[blk*testBS:(blk+1)*testBS])
	}
	zeroed := int64(3) // inside the random part
	for changed[zeroed] {
		zeroed++
	}
	clear(img[zeroed*testBS : (zeroed+1)*testBS])
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	want2 := blake3.Sum256(img)

	res2, err := Sync(context.Background(), src, Local(r), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Point.Seq != 2 || res2.Full {
		t.Fatalf("second sync: point %d, full %v (%s)", res2.Point.Seq, res2.Full, res2.Reason)
	}
	if res2.BytesShipped != 5*testBS || res2.Extents != 5 || res2.Holes != 1 {
		t.Errorf("second sync shipped %d bytes in %d extents and %d holes, want %d bytes, 5 extents, 1 hole",
			res2.BytesShipped, res2.Extents, res2.Holes, 5*testBS)
	}

	for seq, want := range map[uint64][32]byte{1: want1, 2: want2} {
		out := filepath.Join(dir, "export.img")
		if _, err := r.Export(context.Background(), seq, out); err != nil {
			t.Fatal(err)
		}
		if fileHash(t, out) != want {
			t.Errorf("export of point %d differs from the source at that time", seq)
		}
		os.Remove(out)
	}

	// Nothing changed: an empty point.
	res3, err := Sync(context.Background(), src, Local(r), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res3.BytesShipped != 0 || res3.Holes != 0 {
		t.Errorf("unchanged source shipped %d bytes and %d holes", res3.BytesShipped, res3.Holes)
	}
}

// TestSyncLostStateResendsAll checks that without the hashes kept at the
// source the sync sends the whole disk, holes included, and the point is
// still exact.
func TestSyncLostStateResendsAll(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	rng := rand.New(rand.NewPCG(3, 4))
	const size = 4<<20 + 4096 // a short last block
	img := make([]byte, size)
	randomBytes(rng, img[:1<<20])
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := replica.Create(filepath.Join(dir, "replica"), size, replica.Options{BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	opts := Options{Threads: 1, StateDir: stateDir}
	if _, err := Sync(context.Background(), src, Local(r), opts); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(stateDir)
	if len(ents) != 1 {
		t.Fatalf("state dir holds %d files, want 1", len(ents))
	}
	os.Remove(filepath.Join(stateDir, ents[0].Name()))
	clear(img[:testBS])
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Sync(context.Background(), src, Local(r), opts)
	if err != nil {
		t.Fatal(err)
	}
	nblocks := int64((size + testBS - 1) / testBS)
	if !res.Full || res.Extents+res.Holes != nblocks {
		t.Errorf("full %v, %d extents + %d holes, want every one of %d blocks", res.Full, res.Extents, res.Holes, nblocks)
	}
	out := filepath.Join(dir, "out.img")
	if _, err := r.Export(context.Background(), res.Point.Seq, out); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, out) != blake3.Sum256(img) {
		t.Error("export differs from the source")
	}
}

func TestSyncRefusesMismatch(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := replica.Create(filepath.Join(dir, "replica"), 2<<20, replica.Options{BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := Sync(context.Background(), src, Local(r), Options{}); err == nil || !strings.Contains(err.Error(), "holds") {
		t.Errorf("a source of another size synced: %v", err)
	}
	if _, err := Sync(context.Background(), src, Local(r), Options{Threads: 33}); err == nil {
		t.Error("33 streams were accepted")
	}
	if len(r.Points()) != 0 {
		t.Error("a refused sync left a point")
	}
}

// TestSyncDropsStaleStaging checks that extents staged by an interrupted
// sync of an older cut never leak into a new point.
func TestSyncDropsStaleStaging(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	rng := rand.New(rand.NewPCG(5, 6))
	const size = 1 << 20
	img := make([]byte, size)
	randomBytes(rng, img)
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "replica")
	r, err := replica.Create(rdir, size, replica.Options{BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Sync(context.Background(), src, Local(r), Options{}); err != nil {
		t.Fatal(err)
	}
	// An interrupted sync staged block 2 with content the source never
	// committed, then the process stopped.
	txn, err := r.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stale := make([]byte, testBS)
	randomBytes(rng, stale)
	if err := txn.WriteExtent(context.Background(), 2*testBS, stale, blake3.Sum256(stale)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r, err = replica.Open(rdir, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := Sync(context.Background(), src, Local(r), Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.img")
	if _, err := r.Export(context.Background(), res.Point.Seq, out); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, out) != blake3.Sum256(img) {
		t.Error("a block staged by an interrupted sync leaked into the new point")
	}
}
