package replication

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkRecoveredDisks measures what a recovered machine waits for before
// it can boot: its disks at a point, served as overlays or exported as
// copies, for a 1 GiB disk holding 512 MiB of data
// (STANDBY_BENCH_MIB sets the size). It also reads the served disk through
// to report its throughput.
//
//	go test ./internal/replication -run '^$' -bench RecoveredDisks -benchtime 3x
func BenchmarkRecoveredDisks(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("FUSE mounts need root here")
	}
	ctx := context.Background()
	dir := b.TempDir()
	size := int64(1 << 30)
	src := filepath.Join(dir, "data.img")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size/2; off += int64(len(buf)) {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	p := NewProtector(filepath.Join(dir, "replicas"), nil)
	defer p.Close()
	if err := p.Add(Machine{Name: "vm1", Disks: []SourceDisk{{Name: "data", Source: src}}, BlockSize: 1 << 20, Threads: 2}); err != nil {
		b.Fatal(err)
	}
	res, err := p.Cut(ctx, "vm1", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []DiskMode{DisksServed, DisksExported} {
		b.Run(string(mode), func(b *testing.B) {
			p.SetDiskMode(mode)
			var ready, read time.Duration
			for i := 0; i < b.N; i++ {
				out := filepath.Join(dir, "rec", string(mode), time.Now().Format("150405.000000000"))
				start := time.Now()
				disks, err := p.Disks(ctx, "vm1", res.Point.Seq, out)
				if err != nil {
					b.Fatal(err)
				}
				ready += time.Since(start)
				start = time.Now()
				df, err := os.Open(disks["data"])
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, df, make([]byte, 1<<20))
				df.Close()
				if err != nil || n != size {
					b.Fatalf("read %d of %d: %v", n, size, err)
				}
				read += time.Since(start)
				if err := p.Release(ctx, out); err != nil {
					b.Fatal(err)
				}
				_ = os.RemoveAll(out)
			}
			b.ReportMetric(float64(ready.Milliseconds())/float64(b.N), "ms-to-boot")
			b.ReportMetric(float64(size)/1e6/(read.Seconds()/float64(b.N)), "MB/s-read")
		})
	}
}
