package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
)

// overlayGrain is the unit an overlay tracks writes in: the page size of the
// filesystems a drill VM runs, so aligned writes need no read-modify-write.
const overlayGrain = 4096

const overlayMagic = "SBOVLMAP"

// Overlay is a writable disk on top of a view, for drills: reads see the
// point, except where the overlay was written; writes go to the overlay's
// own file in its directory and never to the replica, so replication keeps
// running underneath. The point should be pinned for the overlay's life.
type Overlay struct {
	v    *View
	dir  string
	data *os.File

	mu     sync.RWMutex
	dirty  []uint64 // one bit per grain written
	closed bool
}

// Overlay opens the overlay kept in dir, creating it when dir holds none.
// An existing overlay must belong to the same point.
func (v *View) Overlay(dir string) (*Overlay, error) {
	fail := func(err error) (*Overlay, error) {
		return nil, fmt.Errorf("replica: overlay of point %d in %s: %w", v.seq, dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(hint(err))
	}
	grains := (v.r.size + overlayGrain - 1) / overlayGrain
	o := &Overlay{v: v, dir: dir, dirty: make([]uint64, (grains+63)/64)}
	b, err := os.ReadFile(filepath.Join(dir, "overlay.map"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fail(err)
	default:
		seq, size, grain, body, err := unseal(filepath.Join(dir, "overlay.map"), b, overlayMagic)
		if err != nil {
			return fail(err)
		}
		if seq != v.seq || int64(size) != v.r.size || grain != overlayGrain || len(body) != 8*len(o.dirty) {
			return fail(fmt.Errorf("the overlay there belongs to point %d of a %d-byte disk: use another directory", seq, size))
		}
		for i := range o.dirty {
			o.dirty[i] = binary.LittleEndian.Uint64(body[8*i:])
		}
	}
	if o.data, err = os.OpenFile(filepath.Join(dir, "overlay.img"), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return fail(err)
	}
	if err := o.data.Truncate(v.r.size); err != nil {
		o.data.Close()
		return fail(hint(err))
	}
	return o, nil
}

// Size is the size of the disk in bytes.
func (o *Overlay) Size() int64 { return o.v.r.size }

func (o *Overlay) isDirty(g int64) bool { return o.dirty[g/64]&(1<<(g%64)) != 0 }

// ReadAt reads the overlay's content at off.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed {
		return 0, errors.New("replica: overlay: closed")
	}
	size := o.v.r.size
	if off < 0 || off >= size {
		if off == size {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("replica: overlay read at %d: outside the disk", off)
	}
	want := len(p)
	p = p[:min(int64(len(p)), size-off)]
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		g := pos / overlayGrain
		dirty := o.isDirty(g)
		// Extend the run while grains have the same state.
		end := (g + 1) * overlayGrain
		for end < off+int64(len(p)) && o.isDirty(end/overlayGrain) == dirty {
			end += overlayGrain
		}
		chunk := p[n:min(len(p), int(end-off))]
		var err error
		if dirty {
			_, err = o.data.ReadAt(chunk, pos)
		} else {
			_, err = o.v.ReadAt(chunk, pos)
		}
		if err != nil {
			return n, fmt.Errorf("replica: overlay read at %d: %w", pos, err)
		}
		n += len(chunk)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off into the overlay.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, errors.New("replica: overlay: closed")
	}
	size := o.v.r.size
	if off < 0 || off+int64(len(p)) > size {
		return 0, fmt.Errorf("replica: overlay write at %d+%d: outside the disk of %d bytes", off, len(p), size)
	}
	// A grain written in part takes the rest of its content from the view.
	var grain [overlayGrain]byte
	for _, g := range []int64{off / overlayGrain, (off + int64(len(p)) - 1) / overlayGrain} {
		lo := g * overlayGrain
		hi := min(lo+overlayGrain, size)
		if len(p) == 0 || o.isDirty(g) || (off <= lo && off+int64(len(p)) >= hi) {
			continue
		}
		if _, err := o.v.ReadAt(grain[:hi-lo], lo); err != nil {
			return 0, fmt.Errorf("replica: overlay write at %d: %w", off, err)
		}
		if _, err := o.data.WriteAt(grain[:hi-lo], lo); err != nil {
			return 0, fmt.Errorf("replica: overlay write at %d: %w", off, hint(err))
		}
		o.dirty[g/64] |= 1 << (g % 64)
	}
	if _, err := o.data.WriteAt(p, off); err != nil {
		return 0, fmt.Errorf("replica: overlay write at %d: %w", off, hint(err))
	}
	for g := off / overlayGrain; g*overlayGrain < off+int64(len(p)); g++ {
		o.dirty[g/64] |= 1 << (g % 64)
	}
	return len(p), nil
}

// Zero makes [off, off+n) of the overlay read as zeros (a discard).
func (o *Overlay) Zero(off, n int64) error {
	z := make([]byte, min(n, 1<<20))
	for done := int64(0); done < n; {
		k := min(n-done, int64(len(z)))
		if _, err := o.WriteAt(z[:k], off+done); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// Seq is the point the overlay is on.
func (o *Overlay) Seq() uint64 { return o.v.seq }

// Written is how many bytes of the disk the overlay holds: the grains
// written since it was made, which is what differs from its point.
func (o *Overlay) Written() int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var n int64
	for _, w := range o.dirty {
		n += int64(bits.OnesCount64(w))
	}
	return min(n*overlayGrain, o.v.r.size)
}

// WrittenBlocks lists, in order, the blocks of blockSize bytes that hold a
// grain the overlay wrote: where it may differ from its point.
func (o *Overlay) WrittenBlocks(blockSize int64) []int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var out []int64
	last := int64(-1)
	for w, bitsw := range o.dirty {
		for bitsw != 0 {
			g := int64(w)*64 + int64(bits.TrailingZeros64(bitsw))
			bitsw &= bitsw - 1
			for b := g * overlayGrain / blockSize; b <= (g*overlayGrain+overlayGrain-1)/blockSize; b++ {
				if b > last {
					out = append(out, b)
					last = b
				}
			}
		}
	}
	return out
}

// Changed lists, in order, the blocks of the replica's block size where the
// overlay's point differs from the replica's newest point: what the points
// after it wrote.
func (o *Overlay) Changed() ([]int64, error) { return o.v.Changed() }

// Sync makes the overlay's writes durable.
func (o *Overlay) Sync() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sync()
}

func (o *Overlay) sync() error {
	if err := fdatasync(o.data); err != nil {
		return fmt.Errorf("replica: overlay sync: %w", hint(err))
	}
	b := putHeader(nil, overlayMagic, o.v.seq, uint64(o.v.r.size), overlayGrain)
	for _, w := range o.dirty {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	if err := writeFileAtomic(filepath.Join(o.dir, "overlay.map"), seal(b)); err != nil {
		return fmt.Errorf("replica: overlay sync: %w", hint(err))
	}
	return nil
}

// Close syncs the overlay and closes its file. The overlay stays in its
// directory; Overlay opens it again, and removing the directory discards it.
func (o *Overlay) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	err := o.sync()
	o.closed = true
	if cerr := o.data.Close(); err == nil {
		err = cerr
	}
	return err
}
