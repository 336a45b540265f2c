package replica

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
)

// View reads a retained point as a disk image, without copying: each block
// comes from the oldest undo file at or after the point that holds it, else
// from the base. It stays valid while new points are applied and old ones
// thinned; reads fail once its point is pruned. It is safe for concurrent use.
type View struct {
	r     *Replica
	seq   uint64
	cache atomic.Pointer[viewMap]
	mu    sync.Mutex // one rebuild at a time
}

// viewMap says where each block of the point lives, for one generation of
// the replica's files. Blocks not in src are in the base.
type viewMap struct {
	gen uint64
	src map[int64]*undo
}

// View opens a view of point seq.
func (r *Replica) View(seq uint64) (*View, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, fmt.Errorf("replica: view point %d: the replica is closed", seq)
	}
	v := &View{r: r, seq: seq}
	if _, err := v.resolve(); err != nil {
		return nil, fmt.Errorf("replica: view point %d: %w", seq, err)
	}
	return v, nil
}

// Seq is the point the view shows.
func (v *View) Seq() uint64 { return v.seq }

// Size is the size of the disk in bytes.
func (v *View) Size() int64 { return v.r.size }

// resolve returns the block map for the replica's current files. The caller
// holds v.r.mu shared.
func (v *View) resolve() (*viewMap, error) {
	r := v.r
	if m := v.cache.Load(); m != nil && m.gen == r.gen {
		return m, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if m := v.cache.Load(); m != nil && m.gen == r.gen {
		return m, nil
	}
	i := r.cat.find(v.seq)
	if i < 0 {
		return nil, r.noPoint(v.seq)
	}
	m := &viewMap{gen: r.gen, src: map[int64]*undo{}}
	// Newest first, so the oldest undo holding a block wins.
	for j := len(r.cat.Points) - 1; j >= i; j-- {
		u := r.undos[r.cat.Points[j].Seq]
		if u == nil {
			continue
		}
		for blk := range u.blocks {
			m.src[blk] = u
		}
	}
	v.cache.Store(m)
	return m, nil
}

// Changed lists, in order, the blocks where the view's point differs from
// the newest point: the blocks later points wrote.
func (v *View) Changed() ([]int64, error) {
	v.r.mu.RLock()
	defer v.r.mu.RUnlock()
	if v.r.closed {
		return nil, fmt.Errorf("replica: changes since point %d: the replica is closed", v.seq)
	}
	m, err := v.resolve()
	if err != nil {
		return nil, fmt.Errorf("replica: changes since point %d: %w", v.seq, err)
	}
	out := make([]int64, 0, len(m.src))
	for blk := range m.src {
		out = append(out, blk)
	}
	slices.Sort(out)
	return out, nil
}

// blockSource says where block blk of the view lives: a file, or zero.
type blockSource struct {
	f      *os.File // nil when the block is all zero
	direct *os.File // f opened with O_DIRECT, or nil
	name   string   // "base" or "undo N", for messages
	path   string
}

func (v *View) source(m *viewMap, blk int64) blockSource {
	r := v.r
	u := m.src[blk]
	if u == nil {
		return blockSource{f: r.base.File, direct: r.base.direct, name: "base", path: filepath.Join(r.dir, baseName)}
	}
	s := blockSource{name: fmt.Sprintf("undo %d", u.seq), path: undoDataPath(r.dir, u.seq)}
	if !u.blocks[blk] {
		s.f, s.direct = u.data, u.direct
	}
	return s
}

// ReadAt reads the point's content at off.
func (v *View) ReadAt(p []byte, off int64) (int, error) {
	r := v.r
	if off < 0 {
		return 0, fmt.Errorf("replica: read point %d at %d: negative offset", v.seq, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := r.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return 0, fmt.Errorf("replica: read point %d: the replica is closed", v.seq)
	}
	m, err := v.resolve()
	if err != nil {
		return 0, fmt.Errorf("replica: read point %d: %w", v.seq, err)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		blk := pos / r.blockSize
		end := min(int64(len(p)-n), (blk+1)*r.blockSize-pos)
		chunk := p[n : n+int(end)]
		if s := v.source(m, blk); s.f == nil {
			clear(chunk)
		} else if _, err := s.f.ReadAt(chunk, pos); err != nil {
			return n, fmt.Errorf("replica: read point %d at %d from %s: %w", v.seq, pos, s.name, err)
		}
		n += len(chunk)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// readBlock reads block blk of the view into buf and says where it came
// from. The caller holds v.r.mu shared.
func (v *View) readBlock(m *viewMap, blk int64, buf []byte) (blockSource, error) {
	r := v.r
	s := v.source(m, blk)
	n := r.blockLen(blk)
	if s.f == nil {
		clear(buf[:n])
		return s, nil
	}
	f := s.f
	if s.direct != nil && n%directAlign == 0 && aligned(buf) {
		f = s.direct // whole blocks skip the page cache: less copying, deeper queues
	}
	_, err := f.ReadAt(buf[:n], blk*r.blockSize)
	return s, err
}
