package replica

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/zeebo/blake3"
)

// Benchmarks use a 64 MiB disk by default; STANDBY_BENCH_SIZE (in MiB) and
// STANDBY_BENCH_DIR (where the replica goes) make them measure more.

func benchSize() int64 {
	if mb, err := strconv.Atoi(os.Getenv("STANDBY_BENCH_SIZE")); err == nil && mb > 0 {
		return int64(mb) << 20
	}
	return 64 << 20
}

func benchDir(b *testing.B) string {
	if d := os.Getenv("STANDBY_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "replica-bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// benchImage is a disk of mixed content: three quarters random, a quarter zero.
type benchImage struct {
	size, bs int64
	data     []byte
	hashes   [][32]byte
	zero     []bool
}

func newBenchImage(size, bs int64) *benchImage {
	img := &benchImage{size: size, bs: bs, data: make([]byte, size)}
	rng := rand.New(rand.NewPCG(10, 10))
	for off := int64(0); off < size; off += bs {
		blk := img.data[off:min(off+bs, size)]
		zero := rng.IntN(4) == 0
		if !zero {
			fillRandom(rng, blk)
		}
		img.zero = append(img.zero, zero)
		img.hashes = append(img.hashes, blake3.Sum256(blk))
	}
	return img
}

// stage writes the given blocks of img with workers goroutines, as the
// receiver does with its streams.
func (img *benchImage) stage(b *testing.B, txn *Txn, blocks []int64, workers int) {
	ctx := context.Background()
	next := make(chan int64)
	errs := make(chan error, workers)
	for range workers {
		go func() {
			var first error
			for blk := range next {
				off := blk * img.bs
				var err error
				if img.zero[blk] {
					err = txn.WriteHole(ctx, off, min(img.bs, img.size-off))
				} else {
					err = txn.WriteExtent(ctx, off, img.data[off:min(off+img.bs, img.size)], img.hashes[blk])
				}
				if err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for _, blk := range blocks {
		next <- blk
	}
	close(next)
	for range workers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

func allBlocks(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

// BenchmarkInitialPoint measures a first point: every block staged by four
// writers, durable, and committed.
func BenchmarkInitialPoint(b *testing.B) {
	size := benchSize()
	img := newBenchImage(size, DefaultBlockSize)
	for _, w := range []int{1, 4} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) { benchInitial(b, img, w) })
	}
}

func benchInitial(b *testing.B, img *benchImage, writers int) {
	size := img.size
	blocks := allBlocks(int64(len(img.hashes)))
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r, err := Create(filepath.Join(benchDir(b), "r"), size, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		txn, err := r.Begin(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		img.stage(b, txn, blocks, writers)
		if _, err := txn.Commit(context.Background(), PointMeta{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.Close()
		os.RemoveAll(r.Dir())
		b.StartTimer()
	}
}

// BenchmarkDeltaPoint measures a later point that rewrites a tenth of the
// blocks: staging, undo, overwrite, commit. Bytes are the changed bytes.
func BenchmarkDeltaPoint(b *testing.B) {
	size := benchSize()
	img := newBenchImage(size, DefaultBlockSize)
	r, err := Create(filepath.Join(benchDir(b), "r"), size, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	txn, _ := r.Begin(context.Background())
	img.stage(b, txn, allBlocks(int64(len(img.hashes))), 4)
	if _, err := txn.Commit(context.Background(), PointMeta{}); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 11))
	var changed []int64
	for blk := range int64(len(img.hashes)) {
		if rng.IntN(10) == 0 {
			changed = append(changed, blk)
		}
	}
	b.SetBytes(int64(len(changed)) * img.bs)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for _, blk := range changed { // new content for the changed blocks
			off := blk * img.bs
			p := img.data[off:min(off+img.bs, size)]
			p[0]++
			img.zero[blk] = false
			img.hashes[blk] = blake3.Sum256(p)
		}
		b.StartTimer()
		txn, err := r.Begin(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		img.stage(b, txn, changed, 4)
		if _, err := txn.Commit(context.Background(), PointMeta{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExport measures exporting a point to a sparse, synced file with
// every block checked against its hash.
func BenchmarkExport(b *testing.B) {
	size := benchSize()
	img := newBenchImage(size, DefaultBlockSize)
	dir := benchDir(b)
	r, err := Create(filepath.Join(dir, "r"), size, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	txn, _ := r.Begin(context.Background())
	img.stage(b, txn, allBlocks(int64(len(img.hashes))), 4)
	if _, err := txn.Commit(context.Background(), PointMeta{}); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "export.img")
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Export(context.Background(), 1, out); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(out)
		b.StartTimer()
	}
}

// BenchmarkVerify measures rehashing a point.
func BenchmarkVerify(b *testing.B) {
	size := benchSize()
	img := newBenchImage(size, DefaultBlockSize)
	r, err := Create(filepath.Join(benchDir(b), "r"), size, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	txn, _ := r.Begin(context.Background())
	img.stage(b, txn, allBlocks(int64(len(img.hashes))), 4)
	if _, err := txn.Commit(context.Background(), PointMeta{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Verify(context.Background(), 1); err != nil {
			b.Fatal(err)
		}
	}
}
