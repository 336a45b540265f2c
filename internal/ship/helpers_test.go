package ship

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/replica"
)

const testBlock = 1 << 20

// makeImage writes a disk image of n blocks of mixed content: random,
// zeros, and text that compresses.
func makeImage(t testing.TB, path string, blocks int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	buf := make([]byte, blocks*testBlock)
	for b := range blocks {
		blk := buf[b*testBlock : (b+1)*testBlock]
		switch b % 4 {
		case 0, 1:
			for i := 0; i < len(blk); i += 8 {
				v := rng.Uint64()
				for k := range 8 {
					blk[i+k] = byte(v >> (8 * k))
				}
			}
		case 2:
			line := []byte("ledger entry " + strings.Repeat("x", int(rng.Uint64N(40))) + "\n")
			for i := 0; i < len(blk); i += len(line) {
				copy(blk[i:], line)
			}
		case 3: // zeros
		}
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rewriteBlocks overwrites every k-th block of the image with random data.
func rewriteBlocks(t testing.TB, path string, every int, seed uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	for off := 0; off < len(b); off += every * testBlock {
		for i := off; i < off+testBlock; i++ {
			b[i] = byte(rng.Uint32())
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return blake3.Sum256(b)
}

// testReceiver runs a Receiver on a loopback port until the test ends or
// stop is called.
type testReceiver struct {
	rc   *Receiver
	addr string
	stop func()
}

func startReceiver(t testing.TB, root string, cfg *tls.Config) *testReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &Receiver{Root: root, TLS: cfg, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rc.Serve(ctx, ln) }()
	var once sync.Once
	tr := &testReceiver{rc: rc, addr: ln.Addr().String()}
	tr.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("receiver: %v", err)
			}
		})
	}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *testReceiver) url(path string) string { return "tcp://" + tr.addr + "/" + path }

// push takes one point of source to the client's replica the way
// replication does: scan against the replica's newest point, ship the
// changed extents from workers goroutines, commit with the block hashes.
func push(ctx context.Context, c *Client, source, stateDir string, workers int) (replica.Point, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return replica.Point{}, err
	}
	cut, err := capture.Scan(ctx, source, capture.Base{Seq: info.Newest.Seq, Time: info.Newest.Time}, capture.Options{
		BlockSize: info.BlockSize, Buffers: 2 * workers, StateDir: stateDir, Target: c.Target().String(),
	})
	if err != nil {
		return replica.Point{}, err
	}
	defer cut.Close()
	txn, err := c.Begin(ctx)
	if err != nil {
		return replica.Point{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				e, err := cut.Next(ctx)
				if errors.Is(err, io.EOF) {
					return
				}
				if err == nil {
					if e.Hole {
						err = txn.WriteHole(ctx, e.Off, e.Len)
					} else {
						err = txn.WriteExtent(ctx, e.Off, e.Data, e.Hash)
					}
					e.Release()
				}
				if err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return replica.Point{}, err
	default:
	}
	hashes, err := cut.Hashes()
	if err != nil {
		return replica.Point{}, err
	}
	p, err := txn.Commit(ctx, replica.PointMeta{Time: cut.Time(), BlockHashes: hashes})
	if err != nil {
		return replica.Point{}, err
	}
	return p, cut.Commit(p.Seq, p.Time)
}

// pointHash is the BLAKE3 of the whole disk at point seq of the replica in
// dir (which no receiver may hold open).
func pointHash(t testing.TB, dir string, seq uint64) [32]byte {
	t.Helper()
	r, err := replica.Open(dir, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err := r.View(seq)
	if err != nil {
		t.Fatal(err)
	}
	h := blake3.New()
	if _, err := io.Copy(h, io.NewSectionReader(v, 0, v.Size())); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

func points(t testing.TB, dir string) []replica.Point {
	t.Helper()
	r, err := replica.Open(dir, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return r.Points()
}

func replicaDir(root, path string) string { return filepath.Join(root, filepath.FromSlash(path)) }
