package capture

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
)

const testBS = 64 << 10

// got is what a scan emitted, block indexes sorted.
type got struct {
	data, holes []int64
	lastLen     int64 // length of the extent of the highest block emitted
}

// collect drains a cut with several concurrent consumers and checks each
// extent's hash and content against the file.
func collect(t *testing.T, c *Cut, want []byte) got {
	t.Helper()
	var mu sync.Mutex
	var g got
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				e, err := c.Next(context.Background())
				if errors.Is(err, io.EOF) {
					return
				}
				if err != nil {
					errc <- err
					return
				}
				content := e.Data
				if e.Hole {
					content = make([]byte, e.Len)
				}
				if int64(len(content)) != e.Len || !bytes.Equal(content, want[e.Off:e.Off+e.Len]) {
					errc <- errors.New("extent content differs from the source")
				}
				if blake3.Sum256(content) != e.Hash {
					errc <- errors.New("extent hash differs from its content")
				}
				mu.Lock()
				k := e.Off / testBS
				if e.Hole {
					g.holes = append(g.holes, k)
				} else {
					g.data = append(g.data, k)
				}
				if e.Off+e.Len == int64(len(want)) {
					g.lastLen = e.Len
				}
				mu.Unlock()
				e.Release()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	slices.Sort(g.data)
	slices.Sort(g.holes)
	return g
}

func checkHashes(t *testing.T, c *Cut, content []byte) {
	t.Helper()
	hs, err := c.Hashes()
	if err != nil {
		t.Fatal(err)
	}
	for k := range hs {
		end := min(int64(k+1)*testBS, int64(len(content)))
		if hs[k] != blake3.Sum256(content[int64(k)*testBS:end]) {
			t.Fatalf("hash of block %d is wrong", k)
		}
	}
}

func fill(p []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
}

func TestScanEmitsChangedBlocks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	size := int64(6*testBS + 1000) // 7 blocks, the last one short
	content := make([]byte, size)
	fill(content[0:testBS], 1)              // block 0
	fill(content[2*testBS:3*testBS], 2)     // block 2
	fill(content[3*testBS+5:3*testBS+6], 3) // block 3: one byte
	fill(content[6*testBS:], 4)             // block 6 (short)
	// blocks 1, 4 and 5 stay zero

	steps := []struct {
		name      string
		change    func(p []byte)
		base      uint64
		data      []int64
		holes     []int64
		lastLen   int64
		noCommit  bool
		wantFull  bool
		dropState bool
	}{
		{name: "first point", base: 0, data: []int64{0, 2, 3, 6}, lastLen: 1000},
		{name: "no change", base: 1},
		{name: "one block changed", base: 2, change: func(p []byte) { p[4*testBS+7] = 9 }, data: []int64{4}},
		{name: "block zeroed", base: 3, change: func(p []byte) { clear(p[2*testBS : 3*testBS]) }, holes: []int64{2}},
		{name: "last partial block", base: 4, change: func(p []byte) { p[size-1] ^= 0xff }, data: []int64{6}, lastLen: 1000},
		{name: "two blocks, one zeroed", base: 5, change: func(p []byte) { p[0] ^= 1; clear(p[3*testBS : 4*testBS]) }, data: []int64{0}, holes: []int64{3}},
		{name: "stale state: full resend", base: 7, data: []int64{0, 4, 6}, holes: []int64{1, 2, 3, 5}, lastLen: 1000, wantFull: true, noCommit: true},
		{name: "state lost: full resend", base: 6, data: []int64{0, 4, 6}, holes: []int64{1, 2, 3, 5}, lastLen: 1000, wantFull: true, dropState: true},
	}
	seq := uint64(0)
	clk := clock.NewFake(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.change != nil {
				s.change(content)
			}
			if err := os.WriteFile(src, content, 0o644); err != nil {
				t.Fatal(err)
			}
			if s.dropState {
				if err := os.Remove(statePath(dir, src, "test")); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Scan(context.Background(), src, Base{Seq: s.base}, Options{BlockSize: testBS, Target: "test", Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			g := collect(t, c, content)
			if !slices.Equal(g.data, s.data) || !slices.Equal(g.holes, s.holes) {
				t.Errorf("emitted data blocks %v and holes %v, want %v and %v", g.data, g.holes, s.data, s.holes)
			}
			if g.lastLen != s.lastLen {
				t.Errorf("last block emitted with length %d, want %d", g.lastLen, s.lastLen)
			}
			st := c.Stats()
			if st.Full != s.wantFull {
				t.Errorf("Full = %v (%s), want %v", st.Full, st.Reason, s.wantFull)
			}
			if st.ChangedBlocks != int64(len(s.data)) || st.HoleBlocks != int64(len(s.holes)) {
				t.Errorf("stats count %d changed and %d holes", st.ChangedBlocks, st.HoleBlocks)
			}
			if st.BytesRead != size {
				t.Errorf("read %d bytes of a %d-byte source", st.BytesRead, size)
			}
			checkHashes(t, c, content)
			if !s.noCommit {
				seq++
				if err := c.Commit(seq, clk.Now()); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestScanSparseFileSkipsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "sparse.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(64 * testBS)
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, testBS)
	fill(data, 7)
	if _, err := f.WriteAt(data, 10*testBS); err != nil {
		t.Fatal(err)
	}
	f.Close()
	content := make([]byte, size)
	copy(content[10*testBS:], data)

	c, err := Scan(context.Background(), src, Base{}, Options{BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := collect(t, c, content)
	if !slices.Equal(g.data, []int64{10}) || len(g.holes) != 0 {
		t.Fatalf("emitted %v and holes %v, want block 10 only", g.data, g.holes)
	}
	checkHashes(t, c, content)
	if r := c.Stats().BytesRead; r >= size/2 {
		t.Errorf("read %d bytes of a sparse file holding %d", r, testBS)
	}
}

func TestScanBaseHashesAndProgress(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	content := make([]byte, 20*testBS)
	fill(content, 3)
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	prev := make([][32]byte, 20)
	for k := range prev {
		prev[k] = blake3.Sum256(content[k*testBS : (k+1)*testBS])
	}
	prev[5] = [32]byte{1}
	var last, total int64
	c, err := Scan(context.Background(), src, Base{Seq: 9, Hashes: prev}, Options{
		BlockSize: testBS, Buffers: 2, Workers: 2,
		Progress: func(done, tot int64) { last, total = done, tot },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := collect(t, c, content)
	if !slices.Equal(g.data, []int64{5}) {
		t.Fatalf("emitted %v, want block 5", g.data)
	}
	if last != total || total != int64(len(content)) {
		t.Errorf("progress ended at %d of %d, want %d", last, total, len(content))
	}
}

func TestScanBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, err := Scan(context.Background(), filepath.Join(dir, "missing"), Base{}, Options{}); err == nil {
		t.Error("scan of a missing file succeeded")
	}
	if _, err := Scan(context.Background(), dir, Base{}, Options{}); err == nil {
		t.Error("scan of a directory succeeded")
	}
	src := filepath.Join(dir, "d")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(context.Background(), src, Base{}, Options{BlockSize: 1000}); err == nil {
		t.Error("a block size of 1000 was accepted")
	}
}

func TestScanCancelledStopsWorkers(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	content := make([]byte, 64*testBS)
	fill(content, 5)
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Scan(ctx, src, Base{}, Options{BlockSize: testBS, Buffers: 2})
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.Release()
	cancel()
	for {
		e, err := c.Next(context.Background())
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatal("a cancelled scan ended as if complete")
			}
			break
		}
		e.Release()
	}
	if _, err := c.Hashes(); err == nil {
		t.Error("a cancelled scan gave block hashes")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStateRejectsDamage(t *testing.T) {
	s := &state{BlockSize: 4096, Size: 8192, Seq: 3, Time: time.Unix(5, 0), Target: "r", Hashes: make([][32]byte, 2)}
	p := s.encode()
	if got, err := decodeState(p); err != nil || got.Seq != 3 || got.Target != "r" || len(got.Hashes) != 2 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range [][]byte{p[:len(p)-1], append([]byte{}, p[1:]...), nil} {
		if _, err := decodeState(bad); err == nil {
			t.Error("a damaged state file decoded")
		}
	}
	q := slices.Clone(p)
	q[20] ^= 1
	if _, err := decodeState(q); err == nil {
		t.Error("a flipped byte went unnoticed")
	}
}

// TestScanMappedSourceShrinks checks that a source truncated under a delta
// scan's mapping gives an error, not a crash.
func TestScanMappedSourceShrinks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	content := make([]byte, 8*testBS)
	fill(content, 9)
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := newCut(src, Base{Seq: 1, Hashes: make([][32]byte, 8)}, Options{BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.f.Close()
	if c.mapped == nil {
		t.Skip("the file system cannot map the source")
	}
	defer syscall.Munmap(c.mapped)
	if err := os.Truncate(src, testBS); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.hashMapped(blake3.New(), 4*testBS, testBS); err == nil {
		t.Fatal("hashing a block past the end of a shrunk file succeeded")
	}
}
