package capture

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

// DefaultGrain is the unit in which a tracked disk marks writes dirty.
const DefaultGrain = 64 << 10

// TrackedOptions configure a tracked disk. Zero values take the defaults.
type TrackedOptions struct {
	// Grain is the unit of dirty tracking: 4 KiB to 64 KiB, a power of two
	// (default 64 KiB).
	Grain int64
	// BlockSize is the replica's block: what a cut ships at least. It must
	// be a multiple of the grain or divide it. Default: the grain.
	BlockSize int64
	// StateDir holds the write-intent log and the clean-shutdown file.
	// Default: the directory of the backing file.
	StateDir string
	// Target names the replica the tracking state belongs to.
	Target string
	// Newest is the replica's newest committed point (Seq 0 for a new,
	// all-zero replica): tracking resumes only from state of that point.
	Newest uint64
	// Region is the unit of the write-intent log (default 1 MiB, a
	// multiple of the grain).
	Region int64
	// QuietAfter is how long a region must go unwritten, once its writes
	// are committed, before its intent bit is cleared (default 30 s).
	QuietAfter time.Duration
	// Clock stamps cuts. Default clock.Real.
	Clock clock.Clock
}

// Resync says why, and how much of, a tracked disk must be sent again
// because its tracking had a gap; the first cut sends it.
type Resync struct {
	Needed bool   `json:"needed"`
	Full   bool   `json:"full"`   // the whole disk is read
	Reason string `json:"reason"` // why
	Bytes  int64  `json:"bytes"`  // marked dirty for the resync
}

// Tracked is a disk whose every write is seen: the backing file (or block
// device) is written only through WriteAt, which marks the written range
// dirty. Cut swaps the dirty maps of a set of disks at one instant.
type Tracked struct {
	path  string
	f     *os.File
	size  int64
	grain int64
	unit  int64 // what a cut ships: max(grain, block size)
	clk   clock.Clock
	quiet time.Duration

	intent    *intentLog
	cleanPath string
	stateDir  string
	cow       *os.File // copy-aside file of the open cut
	target    string
	resync    Resync

	// barrier is held shared by every write and exclusively by a cut.
	barrier sync.RWMutex
	dirty   bitmap // grains written since the last cut
	gen     uint64 // generation of dirty; the cut of dirty gets this number
	cut     *TrackedCut

	metaMu       sync.Mutex // guards what follows; never held by writes
	committedGen uint64     // newest generation in a committed point
	newest       uint64
	newestTime   time.Time

	writes, written, cowBytes atomic.Int64

	closeOnce sync.Once
	closed    atomic.Bool
}

// TrackedStats are the running figures of a tracked disk.
type TrackedStats struct {
	Writes       int64 `json:"writes"`
	BytesWritten int64 `json:"bytesWritten"`
	DirtyBytes   int64 `json:"dirtyBytes"`   // marked since the last cut
	CopiedAside  int64 `json:"copiedAside"`  // bytes saved by copy-before-write
	IntentSyncs  int64 `json:"intentSyncs"`  // durable updates of the write-intent log
	Generation   int64 `json:"generation"`   // cuts taken
	Grain        int64 `json:"grain"`        // bytes
	Unit         int64 `json:"unit"`         // bytes a cut ships at least
	Size         int64 `json:"size"`         // disk size
	NewestPoint  int64 `json:"newestPoint"`  // the newest committed point the disk knows of
	IntentRegion int64 `json:"intentRegion"` // bytes per bit of the write-intent log
}

// OpenTracked opens the backing file or block device of a tracked disk and
// decides from the state kept at the source whether tracking resumes
// exactly (after a clean shutdown) or a resync is due: of the regions the
// write-intent log names (after a crash), or of the whole disk (no usable
// state, another replica, a resized disk). Resync tells which.
func OpenTracked(backing string, opts TrackedOptions) (*Tracked, error) {
	t, err := openTracked(backing, opts)
	if err != nil {
		return nil, fmt.Errorf("capture: track %s: %w", backing, err)
	}
	return t, nil
}

func openTracked(backing string, opts TrackedOptions) (*Tracked, error) {
	grain := opts.Grain
	if grain == 0 {
		grain = DefaultGrain
	}
	if grain < 4096 || grain > 64<<10 || grain&(grain-1) != 0 {
		return nil, fmt.Errorf("grain %d: want a power of two from 4 KiB to 64 KiB", grain)
	}
	bs := opts.BlockSize
	if bs == 0 {
		bs = grain
	}
	if bs%grain != 0 && grain%bs != 0 {
		return nil, fmt.Errorf("block size %d and grain %d: one must be a multiple of the other", bs, grain)
	}
	region := opts.Region
	if region == 0 {
		region = max(defaultRegion, grain)
	}
	if region%grain != 0 {
		return nil, fmt.Errorf("intent region %d: want a multiple of the grain %d", region, grain)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	quiet := opts.QuietAfter
	if quiet == 0 {
		quiet = 30 * time.Second
	}
	f, err := os.OpenFile(backing, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open the backing disk: %w", err)
	}
	t := &Tracked{path: backing, f: f, grain: grain, unit: max(grain, bs), clk: clk, quiet: quiet,
		target: opts.Target, newest: opts.Newest}
	ok := false
	defer func() {
		if !ok {
			_ = t.intent.close()
			_ = f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case fi.Mode().IsRegular():
		t.size = fi.Size()
	case fi.Mode()&os.ModeDevice != 0:
		if t.size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("size of the block device: %w", err)
		}
	default:
		return nil, fmt.Errorf("%s is neither a regular file nor a block device", fi.Mode().Type())
	}
	if t.size == 0 || t.size%4096 != 0 {
		return nil, fmt.Errorf("the disk holds %d bytes: want a non-zero multiple of 4 KiB", t.size)
	}
	dir := opts.StateDir
	if dir == "" {
		if fi.Mode()&os.ModeDevice != 0 {
			return nil, errors.New("a block device needs a state directory for its tracking state: set one")
		}
		dir = filepath.Dir(backing)
	}
	intentPath, cleanPath := journalPaths(dir, backing, opts.Target)
	t.cleanPath, t.stateDir = cleanPath, dir
	ngrains := (t.size + grain - 1) / grain
	t.dirty = newBitmap(ngrains)
	t.gen = 1

	// Decide what the first cut must send.
	clean, cleanWhy := t.readClean(fi, grain)
	switch {
	case clean != nil:
		clean.Dirty.orInto(t.dirty)
	case opts.Newest == 0:
		t.resync = Resync{Needed: true, Full: true, Reason: "initial sync: the replica is new"}
		if err := t.markData(); err != nil {
			return nil, err
		}
	default:
		set, why := readIntent(intentPath, t.size, region, opts.Target)
		if cleanWhy != "" {
			why = cleanWhy
		}
		if set != nil && cleanWhy == "" {
			// A crash: the regions the log names may differ from the
			// replica; nothing else can.
			for r := set.next(0); r >= 0; r = set.next(r + 1) {
				t.dirty.setRange(r*region/grain, min((r+1)*region/grain, ngrains))
			}
			t.resync = Resync{Needed: true, Reason: fmt.Sprintf("tracking stopped without a clean shutdown: %d MiB written since point %d are read again", set.count()*region>>20, opts.Newest)}
		} else {
			t.dirty.setRange(0, ngrains)
			t.resync = Resync{Needed: true, Full: true, Reason: why + ": the whole disk is read again"}
		}
	}
	t.resync.Bytes = min(t.dirty.count()*grain, t.size)
	if t.resync.Bytes == 0 && t.resync.Needed && !t.resync.Full {
		t.resync = Resync{}
	}
	// From here on a crash must find the intent log covering the dirty map,
	// and no clean file.
	regs := t.dirty.scale(grain, region, t.size)
	if t.intent, err = createIntent(intentPath, t.size, region, opts.Target, regs); err != nil {
		return nil, fmt.Errorf("write the write-intent log %s: %w", intentPath, err)
	}
	t.intent.keep(t.dirty, grain, t.gen)
	if err := removeDurably(cleanPath); err != nil {
		return nil, fmt.Errorf("remove the clean-shutdown file %s: %w", cleanPath, err)
	}
	ok = true
	return t, nil
}

// readClean returns the dirty map of a clean shutdown when it is of this
// disk, replica and point; otherwise nil and, when a file was there but
// does not fit, why.
func (t *Tracked) readClean(fi os.FileInfo, grain int64) (*cleanState, string) {
	p, err := os.ReadFile(t.cleanPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, fmt.Sprintf("the clean-shutdown file %s is unreadable: %v", t.cleanPath, err)
	}
	c, err := decodeClean(p)
	switch {
	case err != nil:
		return nil, fmt.Sprintf("the clean-shutdown file %s is damaged: %v", t.cleanPath, err)
	case c.Target != t.target:
		return nil, fmt.Sprintf("the tracking state is of replica %q", c.Target)
	case c.Size != t.size:
		return nil, fmt.Sprintf("the disk was resized from %d to %d bytes", c.Size, t.size)
	case c.Grain != grain:
		return nil, fmt.Sprintf("the tracking state is of %d-byte grains, now %d", c.Grain, grain)
	case c.Seq != t.newest:
		return nil, fmt.Sprintf("the tracking state is of point %d, the replica's newest is %d", c.Seq, t.newest)
	case fi.Mode().IsRegular() && c.MTime != fi.ModTime().UnixNano():
		return nil, "the disk was modified while it was not tracked"
	case int64(len(c.Dirty)) != int64(len(t.dirty)):
		return nil, "the clean-shutdown file's dirty map does not fit the disk"
	}
	return c, ""
}

// markData marks every grain holding data (not a hole of a sparse file).
func (t *Tracked) markData() error {
	const seekData, seekHole = 3, 4
	fd := int(t.f.Fd())
	ngrains := int64(len(t.dirty)) * 64
	ngrains = min(ngrains, (t.size+t.grain-1)/t.grain)
	off := int64(0)
	for off < t.size {
		d, err := syscall.Seek(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			return nil
		}
		if err != nil {
			// No SEEK_DATA (a block device, an old file system): all data.
			t.dirty.setRange(0, ngrains)
			return nil
		}
		h, err := syscall.Seek(fd, d, seekHole)
		if err != nil {
			h = t.size
		}
		t.dirty.setRange(d/t.grain, min((h+t.grain-1)/t.grain, ngrains))
		off = h
	}
	return nil
}

// Resync tells whether the first cut is a resync, and why.
func (t *Tracked) Resync() Resync { return t.resync }

// Size is the disk size in bytes.
func (t *Tracked) Size() int64 { return t.size }

// Path is the backing file or device.
func (t *Tracked) Path() string { return t.path }

// Unit is what a cut ships at least: the larger of grain and block size.
func (t *Tracked) Unit() int64 { return t.unit }

// Stats returns the disk's running figures.
func (t *Tracked) Stats() TrackedStats {
	t.barrier.RLock()
	dirty := t.dirty.count() * t.grain
	gen := t.gen
	t.barrier.RUnlock()
	return TrackedStats{
		Writes: t.writes.Load(), BytesWritten: t.written.Load(), DirtyBytes: min(dirty, t.size),
		CopiedAside: t.cowBytes.Load(), IntentSyncs: t.intent.syncs.Load(), Generation: int64(gen - 1),
		Grain: t.grain, Unit: t.unit, Size: t.size, NewestPoint: int64(t.newestSeq()), IntentRegion: t.intent.region,
	}
}

// ReadAt reads the disk as it is now.
func (t *Tracked) ReadAt(p []byte, off int64) (int, error) {
	if off >= t.size {
		return 0, io.EOF
	}
	if off+int64(len(p)) > t.size {
		p = p[:t.size-off]
	}
	n, err := t.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}

// ErrOutside is returned for a write past the end of the disk: a disk does
// not grow.
var ErrOutside = errors.New("write past the end of the disk")

// WriteAt writes p at off and marks it dirty. It returns once the data is
// in the backing file (not necessarily durable: Sync does that) and the
// write-intent log durably names its region. A write waits while a cut's
// barrier is held; a block of a cut not yet shipped is copied aside first.
func (t *Tracked) WriteAt(p []byte, off int64) (int, error) {
	return t.write(off, int64(len(p)), func() (int, error) { return t.f.WriteAt(p, off) })
}

// Zero makes [off, off+n) read as zeros (a discard), tracked like a write.
func (t *Tracked) Zero(off, n int64) error {
	_, err := t.write(off, n, func() (int, error) {
		const punch = 0x01 | 0x02 // FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
		if err := syscall.Fallocate(int(t.f.Fd()), punch, off, n); err != nil {
			// Where holes cannot be punched, write zeros.
			z := make([]byte, min(n, 1<<20))
			for done := int64(0); done < n; {
				k := min(n-done, int64(len(z)))
				if _, err := t.f.WriteAt(z[:k], off+done); err != nil {
					return int(done), err
				}
				done += k
			}
		}
		return int(n), nil
	})
	return err
}

func (t *Tracked) write(off, n int64, do func() (int, error)) (int, error) {
	if t.closed.Load() {
		return 0, os.ErrClosed
	}
	if n == 0 {
		return 0, nil
	}
	if off < 0 || off+n > t.size {
		return 0, ErrOutside
	}
	if err := t.intent.begin(off, n); err != nil {
		return 0, err
	}
	t.barrier.RLock()
	gen := t.gen
	var err error
	if c := t.cut; c != nil {
		err = c.saveBefore(off, n)
	}
	var w int
	if err == nil {
		w, err = do()
	}
	if w > 0 {
		t.dirty.setRange(off/t.grain, (off+int64(w)+t.grain-1)/t.grain)
	}
	t.barrier.RUnlock()
	t.intent.end(off, n, gen, t.clk.Now().UnixNano())
	t.writes.Add(1)
	t.written.Add(int64(w))
	return w, err
}

// Sync makes every write so far durable in the backing file.
func (t *Tracked) Sync() error {
	if err := fdatasync(t.f); err != nil {
		return fmt.Errorf("capture: sync %s: %w", t.path, err)
	}
	return nil
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// Committed tells the disk that the point holding cut c is durable at the
// replica as point seq: regions quiet since then leave the intent log.
func (t *Tracked) Committed(c *TrackedCut, seq uint64, at time.Time) error {
	c.finish(true)
	t.metaMu.Lock()
	if c.gen > t.committedGen {
		t.committedGen = c.gen
	}
	gen := t.committedGen
	t.newest, t.newestTime = seq, at
	t.metaMu.Unlock()
	cutoff := t.clk.Now().Add(-t.quiet).UnixNano()
	if err := t.intent.clearQuiet(gen, cutoff); err != nil {
		return fmt.Errorf("capture: %s: %w", t.path, err)
	}
	return nil
}

// Shutdown ends tracking cleanly: after the disk's users are gone, it
// records the dirty map not yet in a committed point (newest is the
// replica's newest point), so the next OpenTracked resumes without a
// resync. A cut not committed is folded back into the dirty map.
func (t *Tracked) Shutdown(newest uint64, at time.Time) error {
	var err error
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		t.barrier.Lock()
		if c := t.cut; c != nil && !c.committed.Load() {
			c.units.scale(c.unit, t.grain, t.size).orInto(t.dirty)
		}
		dirty := t.dirty
		t.barrier.Unlock()
		err = t.f.Sync()
		var fi os.FileInfo
		if err == nil {
			fi, err = t.f.Stat()
		}
		if err == nil {
			cs := &cleanState{Size: t.size, Grain: t.grain, Seq: newest, Time: at, MTime: fi.ModTime().UnixNano(),
				Target: t.target, Dirty: dirty}
			if !fi.Mode().IsRegular() {
				cs.MTime = 0
			}
			err = replaceFile(t.cleanPath, cs.encode())
		}
		if c := t.cut; c != nil {
			c.finish(false)
		}
		t.closeCow()
		if cerr := t.intent.close(); err == nil {
			err = cerr
		}
		if cerr := t.f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = fmt.Errorf("capture: shut down tracking of %s: %w; the next start resyncs what the write-intent log names", t.path, err)
		}
	})
	return err
}

// Close stops tracking without a clean-shutdown record: the next
// OpenTracked resyncs what the write-intent log names.
func (t *Tracked) Close() error {
	var err error
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		if c := t.cut; c != nil {
			c.finish(false)
		}
		t.closeCow()
		_ = t.intent.close()
		err = t.f.Close()
	})
	return err
}

func stateDirOf(t *Tracked) string { return t.stateDir }

func (t *Tracked) closeCow() {
	if t.cow != nil {
		_ = t.cow.Close()
		t.cow = nil
	}
}

func (t *Tracked) newestSeq() uint64 {
	t.metaMu.Lock()
	defer t.metaMu.Unlock()
	return t.newest
}

// Stat gives the backing file's owner and times, for the served file.
func (t *Tracked) Stat() (syscall.Stat_t, error) {
	var st syscall.Stat_t
	err := syscall.Fstat(int(t.f.Fd()), &st)
	return st, err
}

// Pending lists, in order, the blocks of blockSize bytes that hold writes
// not yet in a committed point: the dirty map, a resync's regions, and the
// cut being shipped. The disk differs from its replica's newest point at
// most there.
func (t *Tracked) Pending(blockSize int64) []int64 {
	t.barrier.RLock()
	pending := newBitmap(int64(len(t.dirty)) * 64)
	t.dirty.orInto(pending)
	c := t.cut
	t.barrier.RUnlock()
	blocks := pending.scale(t.grain, blockSize, t.size)
	if c != nil && !c.committed.Load() {
		c.units.scale(c.unit, blockSize, t.size).orInto(blocks)
	}
	var out []int64
	for b := blocks.next(0); b >= 0; b = blocks.next(b + 1) {
		out = append(out, b)
	}
	return out
}
