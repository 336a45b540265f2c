package capture

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkScan measures a scan of a cached random file whose blocks are all
// unchanged (the delta case): read, hash, compare. The file is 64 MiB unless
// STANDBY_BENCH_SCAN_MIB says otherwise; use a size above the CPU's last
// level cache for figures that hold for large disks.
func BenchmarkScan(b *testing.B) {
	mib := int64(64)
	if s := os.Getenv("STANDBY_BENCH_SCAN_MIB"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("STANDBY_BENCH_SCAN_MIB=%q: %v", s, err)
		}
		mib = v
	}
	src := filepath.Join(b.TempDir(), "disk.img")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range mib {
		fill(chunk, uint64(i))
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	size := mib << 20

	// A first scan gives the hashes the benchmark compares against, and
	// brings the file into the page cache.
	first, err := Scan(context.Background(), src, Base{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	drain(b, first)
	hashes, err := first.Hashes()
	if err != nil {
		b.Fatal(err)
	}
	first.Close()

	b.SetBytes(size)
	cpu0 := cpuTime()
	for b.Loop() {
		c, err := Scan(context.Background(), src, Base{Seq: 1, Hashes: hashes}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if n := drain(b, c); n != 0 {
			b.Fatalf("%d extents emitted for an unchanged disk", n)
		}
		c.Close()
	}
	// CPU time is what a scan costs when the machine is shared; wall time
	// alone swings with the neighbours.
	if d := (cpuTime() - cpu0).Seconds(); d > 0 {
		b.ReportMetric(float64(b.N)*float64(size)/d/1e9, "GB/cpu-s")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func drain(b *testing.B, c *Cut) int {
	n := 0
	for {
		e, err := c.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
		n++
		e.Release()
	}
}
