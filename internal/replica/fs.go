package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"
)

// directAlign is the alignment O_DIRECT needs of offsets, lengths and memory.
const directAlign = 4096

var errLocked = errors.New("locked by another process")

// file is a data file written both ways: large aligned blocks through
// O_DIRECT (no page-cache copy, which is what lets a 2-core machine write at
// disk speed) and the rest through the page cache.
type file struct {
	*os.File
	direct *os.File // nil when the filesystem has no O_DIRECT
}

func openFile(path string, flag int) (*file, error) {
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, err
	}
	return &file{File: f, direct: openDirect(path)}, nil
}

func (f *file) Close() error {
	if f.direct != nil {
		f.direct.Close()
	}
	return f.File.Close()
}

// writeAt writes p at off, bypassing the page cache when it can.
func (f *file) writeAt(p []byte, off int64) error {
	if f.direct != nil && off%directAlign == 0 && len(p)%directAlign == 0 && len(p) >= 64<<10 {
		buf := p
		if uintptr(unsafe.Pointer(&p[0]))%directAlign != 0 {
			ab := getAligned(len(p))
			defer putAligned(ab)
			buf = ab.b[:len(p)]
			copy(buf, p)
		}
		if _, err := f.direct.WriteAt(buf, off); err == nil {
			return nil
		} else if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		// EINVAL: the device wants a larger alignment; fall back.
	}
	_, err := f.File.WriteAt(p, off)
	return err
}

func aligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

type alignedBuf struct {
	raw []byte
	b   []byte
}

var alignedPool sync.Pool

func getAligned(n int) *alignedBuf {
	if v, ok := alignedPool.Get().(*alignedBuf); ok && len(v.b) >= n {
		return v
	}
	raw := make([]byte, n+directAlign)
	skip := int((directAlign - uintptr(unsafe.Pointer(&raw[0]))%directAlign) % directAlign)
	return &alignedBuf{raw: raw, b: raw[skip : skip+n]}
}

func putAligned(b *alignedBuf) { alignedPool.Put(b) }

var zeroBuf = make([]byte, 1<<20)

func writeZeros(f *os.File, off, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeroBuf)))
		if _, err := f.WriteAt(zeroBuf[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// isZero reports whether p is all zero bytes.
func isZero(p []byte) bool {
	for len(p) > 0 {
		c := min(len(p), len(zeroBuf))
		if string(p[:c]) != string(zeroBuf[:c]) {
			return false
		}
		p = p[c:]
	}
	return true
}

// syncDir makes the creation, rename or removal of entries in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic replaces path with data: write a temporary file, fsync it,
// rename it over path, fsync the directory. A crash leaves the old file or the
// new one, never a mix.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeFileSync writes a new file and fsyncs it (the directory is synced by
// the caller, once for many files).
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// hint adds what to do to an I/O error a user can act on.
func hint(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w (the replica's filesystem is full: free space there and retry; committed points are intact)", err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w (the replica's filesystem is read-only: remount it read-write)", err)
	case errors.Is(err, syscall.EIO):
		return fmt.Errorf("%w (the disk under the replica reported an I/O error: check it, then run `standby replica verify`)", err)
	}
	return err
}
