package capture

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Range is a byte range of a disk.
type Range struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// TrackedCut is the content of one tracked disk at one instant: the units
// written since the previous cut. ReadAt reads them as they were at the cut
// even while the disk is being written: a unit of the cut written again
// before it was read is copied aside first (copy-before-write).
type TrackedCut struct {
	t       *Tracked
	gen     uint64
	time    time.Time
	unit    int64
	units   bitmap // immutable once cut
	nbytes  int64
	resync  bool
	stripes [64]cutStripe

	cowMu     sync.RWMutex // writers copying aside hold it shared; finish exclusively
	done      atomic.Bool
	committed atomic.Bool
	cowNext   atomic.Int64
}

type cutStripe struct {
	mu sync.Mutex
	st map[int64]unitState
}

type unitState struct {
	saved, read bool
	slot        int64 // offset in the copy-aside file
}

// CutTracked takes one cut across disks at a single instant: a write barrier on
// all of them (writes wait), the dirty maps swapped, the barrier released.
// It returns a cut per disk, in the same order, and how long writes were
// held. The previous cut of each disk must be committed or abandoned.
func CutTracked(disks []*Tracked) ([]*TrackedCut, time.Duration, error) {
	if len(disks) == 0 {
		return nil, 0, errors.New("capture: cut: no disks")
	}
	fresh := make([]bitmap, len(disks))
	cuts := make([]*TrackedCut, len(disks))
	for i, t := range disks {
		if t.closed.Load() {
			return nil, 0, fmt.Errorf("capture: cut %s: the disk is closed", t.path)
		}
		if c := t.cut; c != nil && !c.done.Load() {
			return nil, 0, fmt.Errorf("capture: cut %s: the previous cut is still being shipped", t.path)
		}
		if err := t.cowFile(); err != nil {
			return nil, 0, fmt.Errorf("capture: cut %s: %w", t.path, err)
		}
		fresh[i] = newBitmap(int64(len(t.dirty)) * 64)
		// Everything a writer touches is ready before the cut is published
		// to writers under the barrier: a write may follow its release at
		// once.
		c := &TrackedCut{t: t, unit: t.unit}
		for j := range c.stripes {
			c.stripes[j].st = make(map[int64]unitState)
		}
		cuts[i] = c
	}
	clk := disks[0].clk
	start := clk.Now()
	for _, t := range disks {
		t.barrier.Lock()
	}
	at := clk.Now()
	for i, t := range disks {
		c := cuts[i]
		c.gen, c.time, c.resync = t.gen, at, t.gen == 1 && t.resync.Needed
		c.units = t.dirty.scale(t.grain, t.unit, t.size)
		t.dirty = fresh[i][:len(t.dirty)]
		t.gen++
		t.cut = c
	}
	for i := len(disks) - 1; i >= 0; i-- {
		disks[i].barrier.Unlock()
	}
	pause := clk.Since(start)
	for _, c := range cuts {
		c.nbytes = min(c.units.count()*c.unit, c.t.size)
		if last := (c.t.size - 1) / c.unit; c.units.has(last) {
			c.nbytes -= (last+1)*c.unit - c.t.size
		}
	}
	return cuts, pause, nil
}

// cowFile makes sure the disk has its copy-aside file: unlinked, in the
// state directory, emptied after each cut.
func (t *Tracked) cowFile() error {
	if t.cow != nil {
		return nil
	}
	f, err := os.CreateTemp(stateDirOf(t), ".standby-cow-*")
	if err != nil {
		return fmt.Errorf("create the copy-aside file: %w", err)
	}
	_ = os.Remove(f.Name())
	t.cow = f
	return nil
}

// Time is the instant of the cut.
func (c *TrackedCut) Time() time.Time { return c.time }

// Generation numbers the cut among the disk's cuts, from 1.
func (c *TrackedCut) Generation() uint64 { return c.gen }

// Bytes is how much the cut ships.
func (c *TrackedCut) Bytes() int64 { return c.nbytes }

// Resync says the cut carries the resync decided when the disk was opened.
func (c *TrackedCut) Resync() bool { return c.resync }

// Disk is the disk the cut is of.
func (c *TrackedCut) Disk() *Tracked { return c.t }

// Extents returns the cut's ranges in disk order, runs of dirty units
// split at maxLen (rounded down to whole units, at least one unit).
func (c *TrackedCut) Extents(maxLen int64) []Range {
	per := max(maxLen/c.unit, 1)
	var out []Range
	nunits := (c.t.size + c.unit - 1) / c.unit
	for u := c.units.next(0); u >= 0 && u < nunits; {
		v := u + 1
		for v < nunits && v-u < per && c.units.has(v) {
			v++
		}
		off := u * c.unit
		out = append(out, Range{Off: off, Len: min(v*c.unit, c.t.size) - off})
		u = c.units.next(v)
	}
	return out
}

func (c *TrackedCut) unitLen(u int64) int64 { return min(c.unit, c.t.size-u*c.unit) }

// saveBefore copies aside the units of the cut under [off, off+n) that
// have not been read yet, before a write changes them. The caller holds
// the disk's barrier shared.
func (c *TrackedCut) saveBefore(off, n int64) error {
	if c.done.Load() {
		return nil
	}
	c.cowMu.RLock()
	defer c.cowMu.RUnlock()
	if c.done.Load() {
		return nil
	}
	var buf []byte
	for u := off / c.unit; u <= (off+n-1)/c.unit; u++ {
		if !c.units.has(u) {
			continue
		}
		s := &c.stripes[u%int64(len(c.stripes))]
		s.mu.Lock()
		e := s.st[u]
		if e.saved || e.read {
			s.mu.Unlock()
			continue
		}
		l := c.unitLen(u)
		if int64(cap(buf)) < l {
			buf = make([]byte, l)
		}
		b := buf[:l]
		if _, err := c.t.f.ReadAt(b, u*c.unit); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("copy aside block at %d before it is overwritten: %w", u*c.unit, err)
		}
		slot := c.cowNext.Add(l) - l
		if _, err := c.t.cow.WriteAt(b, slot); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("copy aside block at %d before it is overwritten: %w", u*c.unit, err)
		}
		s.st[u] = unitState{saved: true, slot: slot}
		s.mu.Unlock()
		c.t.cowBytes.Add(l)
	}
	return nil
}

// ReadAt reads [off, off+len(p)) of the disk as it was at the cut. The
// range must be whole units of the cut (an extent from Extents or part of
// one). Safe for concurrent use on distinct ranges.
func (c *TrackedCut) ReadAt(p []byte, off int64) error {
	if c.done.Load() {
		return fmt.Errorf("capture: read the cut of %s: the cut is finished", c.t.path)
	}
	if off%c.unit != 0 || off+int64(len(p)) > c.t.size || (int64(len(p))%c.unit != 0 && off+int64(len(p)) != c.t.size) {
		return fmt.Errorf("capture: read the cut of %s at %d+%d: not whole units of %d bytes", c.t.path, off, len(p), c.unit)
	}
	for q := int64(0); q < int64(len(p)); {
		u := (off + q) / c.unit
		l := c.unitLen(u)
		if !c.units.has(u) {
			return fmt.Errorf("capture: read the cut of %s at %d: the block is not part of the cut", c.t.path, u*c.unit)
		}
		s := &c.stripes[u%int64(len(c.stripes))]
		s.mu.Lock()
		e := s.st[u]
		var err error
		if e.saved {
			_, err = c.t.cow.ReadAt(p[q:q+l], e.slot)
		} else {
			_, err = c.t.f.ReadAt(p[q:q+l], u*c.unit)
			e.read = true
			s.st[u] = e
		}
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("capture: read the cut of %s at %d: %w", c.t.path, u*c.unit, err)
		}
		q += l
	}
	return nil
}

// Abandon gives up shipping the cut: its units go back into the disk's
// dirty map, to be shipped (with their content then) by the next cut.
func (c *TrackedCut) Abandon() {
	if c.done.Load() {
		return
	}
	t := c.t
	t.barrier.RLock()
	c.units.scale(c.unit, t.grain, t.size).orInto(t.dirty)
	t.barrier.RUnlock()
	c.finish(false)
}

// finish ends copy-before-write for the cut and empties the copy-aside
// file.
func (c *TrackedCut) finish(committed bool) {
	if committed {
		c.committed.Store(true)
	}
	if c.done.Swap(true) {
		return
	}
	c.cowMu.Lock()
	defer c.cowMu.Unlock()
	if c.t.cow != nil {
		_ = c.t.cow.Truncate(0)
	}
	c.cowNext.Store(0)
}
