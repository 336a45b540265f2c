package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// ExportStats describes an export.
type ExportStats struct {
	Seq       uint64        `json:"seq"`
	Path      string        `json:"path"`
	Bytes     int64         `json:"bytes"`     // size of the image
	DataBytes int64         `json:"dataBytes"` // bytes written; the rest are holes
	Elapsed   time.Duration `json:"-"`
}

// Export writes point seq to out as a sparse raw image (all-zero blocks are
// holes), checking every block against the hash recorded at commit on the
// way, and syncs it. On any mismatch it removes out and returns a
// *VerifyError: a damaged point is never exported silently.
func (r *Replica) Export(ctx context.Context, seq uint64, out string) (ExportStats, error) {
	start := r.clock.Now()
	stats := ExportStats{Seq: seq, Path: out, Bytes: r.size}
	fail := func(err error) (ExportStats, error) {
		var ve *VerifyError
		if errors.As(err, &ve) {
			return stats, err
		}
		return stats, fmt.Errorf("replica: export point %d to %s: %w", seq, out, hint(err))
	}
	hashes, err := r.pointHashes(seq)
	if err != nil {
		return fail(err)
	}
	v, err := r.View(seq)
	if err != nil {
		return fail(err)
	}
	if st, err := os.Stat(out); err == nil && !st.Mode().IsRegular() {
		return fail(errors.New("not a regular file: export writes image files"))
	}
	f, err := openFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fail(err)
	}
	ok := false
	defer func() {
		f.Close()
		if !ok {
			os.Remove(out)
		}
	}()
	if err := f.Truncate(r.size); err != nil {
		return fail(err)
	}
	var mu sync.Mutex
	var damage []Damage
	var done, data atomic.Int64
	err = r.eachBlock(ctx, 6, func(blk int64, buf []byte) error {
		n := r.blockLen(blk)
		s, h, err := v.hashBlock(blk, buf)
		if err != nil {
			return err
		}
		if h != hashes[blk] {
			mu.Lock()
			damage = append(damage, Damage{Block: blk, Offset: blk * r.blockSize, File: s.name, Path: s.path})
			mu.Unlock()
			return errDamaged
		}
		if h != r.zeroHashOf(blk) {
			if err := f.writeAt(buf[:n], blk*r.blockSize); err != nil {
				return err
			}
			startWriteback(f.File, blk*r.blockSize, n)
			data.Add(n)
		}
		r.report("export", done.Add(n), r.size)
		return nil
	})
	if errors.Is(err, errDamaged) {
		return fail(&VerifyError{Op: "export", Seq: seq, Damage: damage,
			Hint: "export refused and " + out + " removed: export an older point that verifies, or resync the disk"})
	}
	if err != nil {
		return fail(err)
	}
	if err := fdatasync(f.File); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(out)); err != nil {
		return fail(err)
	}
	ok = true
	stats.DataBytes = data.Load()
	stats.Elapsed = r.clock.Since(start)
	return stats, nil
}

var errDamaged = errors.New("damaged block")
