package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
)

// DefaultBlockSize is the block a scan hashes and ships by default.
const DefaultBlockSize = 4 << 20

// readPiece is how much of a block one read system call fetches. A piece is
// hashed right after it is read, while it is still in the core's cache,
// which is what lets a scan of a cached disk run at the speed of the hash.
const readPiece = 256 << 10

// Options tunes a scan. The zero value works for a regular file.
type Options struct {
	// BlockSize is the unit of hashing and shipping, a multiple of 4 KiB.
	// Default DefaultBlockSize.
	BlockSize int64
	// Workers read and hash blocks in parallel. Default: one per core.
	Workers int
	// Buffers is how many blocks may be in memory at once, being read or
	// waiting for the consumer to Release them; it bounds the memory of a
	// scan at Buffers x BlockSize. Default 2 x Workers, at least 2.
	Buffers int
	// StateDir holds the state file with the block hashes of the last
	// committed point. Default: the directory of a source file; required for
	// a block device.
	StateDir string
	// Target names the replica the state belongs to, so one source can
	// replicate to several replicas.
	Target string
	// Clock stamps the cut. Default clock.Real.
	Clock clock.Clock
	// Progress, when set, is called each time a block is settled (found
	// unchanged, or emitted and released) with the bytes settled so far and
	// the disk size. Calls are serialised.
	Progress func(done, total int64)
}

// Base is what the replica holds before this cut: the scan emits what
// differs from it.
type Base struct {
	// Seq is the replica's newest committed point; 0 for a new replica,
	// which is all zeros.
	Seq uint64
	// Time is that point's time as the replica recorded it; zero skips the
	// check that the state at the source is of the same point.
	Time time.Time
	// Hashes, when not nil, are the block hashes of point Seq (one per
	// block), used instead of the state kept at the source.
	Hashes [][32]byte
}

// Extent is one changed range of the disk at the cut: a whole block, or the
// last, shorter block of the disk.
type Extent struct {
	Off, Len int64
	// Hole says the range is all zeros now; Data is then nil.
	Hole bool
	// Hash is the BLAKE3-256 of the range's content (of Len zero bytes for a
	// hole).
	Hash [32]byte
	// Data is the content as of the cut. It stays valid until Release.
	Data []byte

	cut *Cut
	buf *[]byte
}

// Release gives the extent's buffer back to the scan. Call it once the
// content is durably handed on; the scan stalls when every buffer is held.
// Release is idempotent.
func (e *Extent) Release() {
	c := e.cut
	if c == nil {
		return
	}
	e.cut = nil
	if e.buf != nil {
		c.putBuf(e.buf)
		e.buf, e.Data = nil, nil
	}
	c.settle(e.Len)
}

// Stats are the figures of one scan.
type Stats struct {
	Size          int64  `json:"size"`
	BlockSize     int64  `json:"blockSize"`
	Blocks        int64  `json:"blocks"`
	BytesRead     int64  `json:"bytesRead"` // read from the source; holes of a sparse file are not read
	ChangedBlocks int64  `json:"changedBlocks"`
	ChangedBytes  int64  `json:"changedBytes"`
	HoleBlocks    int64  `json:"holeBlocks"`
	HoleBytes     int64  `json:"holeBytes"`
	Full          bool   `json:"full"`             // no usable hashes of the previous point: every block was sent
	Reason        string `json:"reason,omitempty"` // why Full
}

// Cut is one scan in progress: the changed extents of the source since
// Base, as of the time the scan started. Next hands them out; Hashes gives
// the block hashes of the whole disk once Next has returned io.EOF; Commit
// records them at the source after the replica committed the point.
type Cut struct {
	source    string
	f         *os.File
	size      int64
	bs        int64
	nblocks   int64
	time      time.Time
	target    string
	statePath string
	sparse    bool
	mapped    []byte // the source file mapped read-only, for delta scans

	prev     [][32]byte // hashes of the base; nil when unknown or a new replica
	zeroBase bool       // the base is all zeros (new replica)
	full     bool
	reason   string
	zeroFull [32]byte // hash of a whole zero block
	zeroLast [32]byte // hash of a zero last block
	hashes   [][32]byte

	next    atomic.Int64
	out     chan *Extent
	pool    chan *[]byte
	bufMu   sync.Mutex
	bufN    int
	bufMax  int
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	errMu   sync.Mutex
	err     error
	closeMu sync.Once

	bytesRead, changedBlocks, changedBytes, holeBlocks, holeBytes atomic.Int64

	progress   func(done, total int64)
	progressMu sync.Mutex
	settled    int64
}

// Scan opens source, a file or block device, and starts reading and hashing
// it in the background. Receive the changed extents with Next; Close the cut
// when done with it.
func Scan(ctx context.Context, source string, base Base, opts Options) (*Cut, error) {
	c, err := newCut(source, base, opts)
	if err != nil {
		return nil, fmt.Errorf("capture: scan %s: %w", source, err)
	}
	c.start(ctx, opts.Workers)
	return c, nil
}

func newCut(source string, base Base, opts Options) (*Cut, error) {
	bs := opts.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if bs < 4096 || bs%4096 != 0 || bs > 1<<30 {
		return nil, fmt.Errorf("block size %d: want a multiple of 4 KiB between 4 KiB and 1 GiB", bs)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	f, err := os.Open(source)
	if err != nil {
		return nil, fmt.Errorf("open the source: %w", err)
	}
	c := &Cut{source: source, f: f, bs: bs, time: clk.Now(), target: opts.Target, progress: opts.Progress}
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	stateDir := opts.StateDir
	switch {
	case fi.Mode().IsRegular():
		c.size = fi.Size()
		c.sparse = true
		if stateDir == "" {
			stateDir = filepath.Dir(source)
		}
	case fi.Mode()&os.ModeDevice != 0:
		if c.size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("size of the block device: %w", err)
		}
		if stateDir == "" {
			return nil, errors.New("a block device needs a state directory for its block hashes: set one")
		}
	default:
		return nil, fmt.Errorf("%s is neither a regular file nor a block device", fi.Mode().Type())
	}
	c.statePath = statePath(stateDir, source, opts.Target)
	c.nblocks = (c.size + bs - 1) / bs
	c.hashes = make([][32]byte, c.nblocks)
	c.zeroFull = zeroHash(bs)
	c.zeroLast = c.zeroFull
	if r := c.size % bs; r != 0 {
		c.zeroLast = zeroHash(r)
	}
	if err := c.setBase(base); err != nil {
		return nil, err
	}
	if c.prev != nil && c.sparse && c.size > 0 {
		// A delta scan hashes blocks in place, without copying them; only
		// the few that changed are read into buffers. Where the file cannot
		// be mapped, every block is read.
		if m, err := syscall.Mmap(int(f.Fd()), 0, int(c.size), syscall.PROT_READ, syscall.MAP_SHARED); err == nil {
			c.mapped = m
		}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	c.bufMax = opts.Buffers
	if c.bufMax <= 0 {
		c.bufMax = 2 * workers
	}
	c.bufMax = max(c.bufMax, 2)
	c.pool = make(chan *[]byte, c.bufMax)
	c.out = make(chan *Extent, c.bufMax)
	c.done = make(chan struct{})
	ok = true
	return c, nil
}

// setBase decides what the scan compares against.
func (c *Cut) setBase(base Base) error {
	switch {
	case base.Seq == 0:
		c.zeroBase = true
		return nil
	case base.Hashes != nil:
		if int64(len(base.Hashes)) != c.nblocks {
			return fmt.Errorf("%d base hashes given for a disk of %d blocks", len(base.Hashes), c.nblocks)
		}
		c.prev = base.Hashes
		return nil
	}
	st, err := readState(c.statePath)
	why := ""
	switch {
	case err != nil:
		why = fmt.Sprintf("the block hashes kept at the source (%s) are unreadable: %v", c.statePath, err)
	case st == nil:
		why = "no block hashes of the replica's newest point are kept at the source"
	case st.Target != c.target:
		why = fmt.Sprintf("the block hashes kept at the source are of replica %q", st.Target)
	case st.Seq != base.Seq:
		why = fmt.Sprintf("the block hashes kept at the source are of point %d, the replica's newest is %d", st.Seq, base.Seq)
	case !base.Time.IsZero() && absDuration(st.Time.Sub(base.Time)) >= time.Second:
		why = fmt.Sprintf("the block hashes kept at the source are of a point %d cut at %s, the replica's was cut at %s",
			st.Seq, st.Time.UTC().Format(time.RFC3339), base.Time.UTC().Format(time.RFC3339))
	case st.BlockSize != c.bs || st.Size != c.size:
		why = fmt.Sprintf("the block hashes kept at the source are of %d-byte blocks of a %d-byte disk, now %d-byte blocks of %d bytes",
			st.BlockSize, st.Size, c.bs, c.size)
	}
	if why != "" {
		c.full, c.reason = true, why
		return nil
	}
	c.prev = st.Hashes
	return nil
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// zeroHash is the BLAKE3-256 of n zero bytes.
func zeroHash(n int64) (sum [32]byte) {
	h := blake3.New()
	for n > 0 {
		k := min(n, int64(len(zeroPiece)))
		_, _ = h.Write(zeroPiece[:k])
		n -= k
	}
	h.Sum(sum[:0])
	return sum
}

var zeroPiece [readPiece]byte

// isZero reports whether p holds only zero bytes. bytes.Equal runs in
// vector instructions and stops at the first difference.
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroPiece))
		if !bytes.Equal(p[:n], zeroPiece[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

func (c *Cut) start(ctx context.Context, workers int) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.work(); err != nil {
				c.fail(err)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(c.done) // before out: whoever sees the end of out may ask for Hashes
		close(c.out)
	}()
}

func (c *Cut) fail(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
	c.cancel()
}

func (c *Cut) failure() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// work reads, hashes and classifies blocks until none is left.
func (c *Cut) work() error {
	h := blake3.New()
	sparse := c.sparse
	for {
		k := c.next.Add(1) - 1
		if k >= c.nblocks {
			return nil
		}
		if err := c.ctx.Err(); err != nil {
			return err
		}
		off := k * c.bs
		n := min(c.bs, c.size-off)
		zeroSum := c.zeroFull
		if n != c.bs {
			zeroSum = c.zeroLast
		}
		if sparse {
			hole, err := c.inHole(off, n)
			if err != nil {
				sparse = false // the file system cannot tell; read everything
			} else if hole {
				c.hashes[k] = zeroSum
				if err := c.classify(k, off, n, true, zeroSum, nil); err != nil {
					return err
				}
				continue
			}
		}
		if c.mapped != nil {
			zero, sum, err := c.hashMapped(h, off, n)
			if err != nil {
				return fmt.Errorf("read block %d at offset %d: %w", k, off, err)
			}
			if zero {
				sum = zeroSum
			}
			if zero || c.prev[k] == sum {
				c.hashes[k] = sum
				if err := c.classify(k, off, n, zero, sum, nil); err != nil {
					return err
				}
				continue
			}
			// Changed data: read it into a buffer, whose content is what
			// gets hashed and shipped.
		}
		bp, err := c.getBuf()
		if err != nil {
			return err
		}
		buf := (*bp)[:n]
		zero, sum, err := c.readBlock(h, buf, off)
		if err != nil {
			c.putBuf(bp)
			return fmt.Errorf("read block %d at offset %d: %w", k, off, err)
		}
		if c.mapped == nil {
			c.bytesRead.Add(n) // else counted once, when hashed in place
		}
		if zero {
			sum = zeroSum
		}
		c.hashes[k] = sum
		if zero {
			c.putBuf(bp)
			bp = nil
		}
		if err := c.classify(k, off, n, zero, sum, bp); err != nil {
			return err
		}
	}
}

// classify settles block k as unchanged, or emits it as a hole or as data
// (holding bp until the consumer releases it).
func (c *Cut) classify(k, off, n int64, zero bool, sum [32]byte, bp *[]byte) error {
	unchanged := (zero && c.zeroBase) || (c.prev != nil && c.prev[k] == sum)
	if unchanged {
		if bp != nil {
			c.putBuf(bp)
		}
		c.settle(n)
		return nil
	}
	e := &Extent{Off: off, Len: n, Hash: sum, cut: c}
	if zero {
		e.Hole = true
		c.holeBlocks.Add(1)
		c.holeBytes.Add(n)
	} else {
		e.Data, e.buf = (*bp)[:n], bp
		c.changedBlocks.Add(1)
		c.changedBytes.Add(n)
	}
	select {
	case c.out <- e:
		return nil
	case <-c.ctx.Done():
		if bp != nil {
			c.putBuf(bp)
		}
		return c.ctx.Err()
	}
}

// inHole reports whether [off, off+n) lies in a hole of a sparse file.
func (c *Cut) inHole(off, n int64) (bool, error) {
	const seekData = 3 // SEEK_DATA
	d, err := c.f.Seek(off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return true, nil // no data from off to the end of the file
	}
	if err != nil {
		return false, err
	}
	return d >= off+n, nil
}

// hashMapped hashes [off, off+n) of the mapped source in place and lets go
// of its pages afterwards, so the scan's resident memory stays small. A
// file that shrinks under the mapping faults: that becomes an error.
func (c *Cut) hashMapped(h *blake3.Hasher, off, n int64) (zero bool, sum [32]byte, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the source faulted while mapped (it shrank during the scan?): %v", r)
		}
	}()
	p := c.mapped[off : off+n]
	c.bytesRead.Add(n)
	if isZero(p) {
		zero = true
	} else {
		h.Reset()
		_, _ = h.Write(p)
		h.Sum(sum[:0])
	}
	_ = syscall.Madvise(p, syscall.MADV_DONTNEED)
	return zero, sum, nil
}

// readBlock reads buf from off piece by piece, hashing each piece while it
// is still in the cache. Hashing waits until the first non-zero piece, so an
// all-zero block costs a read and a compare, not a hash.
func (c *Cut) readBlock(h *blake3.Hasher, buf []byte, off int64) (zero bool, sum [32]byte, err error) {
	n := len(buf)
	allZero := true
	h.Reset()
	for p := 0; p < n; p += readPiece {
		q := min(p+readPiece, n)
		_, err := c.f.ReadAt(buf[p:q], off+int64(p))
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("the source ended early (it shrank during the scan?): %w", io.ErrUnexpectedEOF)
			}
			return false, sum, err
		}
		if allZero {
			if isZero(buf[p:q]) {
				continue
			}
			allZero = false
			_, _ = h.Write(buf[:q]) // the zero prefix and this piece
			continue
		}
		_, _ = h.Write(buf[p:q])
	}
	if allZero {
		return true, sum, nil
	}
	h.Sum(sum[:0])
	return false, sum, nil
}

func (c *Cut) getBuf() (*[]byte, error) {
	select {
	case b := <-c.pool:
		return b, nil
	default:
	}
	c.bufMu.Lock()
	if c.bufN < c.bufMax {
		c.bufN++
		c.bufMu.Unlock()
		b := make([]byte, c.bs)
		return &b, nil
	}
	c.bufMu.Unlock()
	select {
	case b := <-c.pool:
		return b, nil
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	}
}

func (c *Cut) putBuf(b *[]byte) {
	select {
	case c.pool <- b:
	default: // cannot happen: the pool holds every buffer ever made
	}
}

func (c *Cut) settle(n int64) {
	if c.progress == nil {
		return
	}
	c.progressMu.Lock()
	c.settled += n
	c.progress(c.settled, c.size)
	c.progressMu.Unlock()
}

// Next returns the next changed extent, in no particular order, or io.EOF
// when the scan is complete. It is safe for concurrent use: several streams
// may each call Next and ship what they get. Release every extent.
func (c *Cut) Next(ctx context.Context) (*Extent, error) {
	if err := c.failure(); err != nil {
		return nil, fmt.Errorf("capture: scan %s: %w", c.source, err)
	}
	select {
	case e, ok := <-c.out:
		if !ok {
			if err := c.failure(); err != nil {
				return nil, fmt.Errorf("capture: scan %s: %w", c.source, err)
			}
			return nil, io.EOF
		}
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Size is the size of the source disk in bytes.
func (c *Cut) Size() int64 { return c.size }

// BlockSize is the block the scan hashes.
func (c *Cut) BlockSize() int64 { return c.bs }

// Time is when the cut was taken.
func (c *Cut) Time() time.Time { return c.time }

// Hashes returns the BLAKE3-256 of every block of the disk at the cut, once
// Next has returned io.EOF.
func (c *Cut) Hashes() ([][32]byte, error) {
	select {
	case <-c.done:
	default:
		return nil, fmt.Errorf("capture: scan %s: block hashes asked for before the scan finished", c.source)
	}
	if err := c.failure(); err != nil {
		return nil, fmt.Errorf("capture: scan %s: %w", c.source, err)
	}
	return c.hashes, nil
}

// Stats returns the scan's figures so far.
func (c *Cut) Stats() Stats {
	return Stats{
		Size:          c.size,
		BlockSize:     c.bs,
		Blocks:        c.nblocks,
		BytesRead:     c.bytesRead.Load(),
		ChangedBlocks: c.changedBlocks.Load(),
		ChangedBytes:  c.changedBytes.Load(),
		HoleBlocks:    c.holeBlocks.Load(),
		HoleBytes:     c.holeBytes.Load(),
		Full:          c.full,
		Reason:        c.reason,
	}
}

// Commit records the cut's block hashes at the source as those of point
// seq, cut at t as the replica recorded it. Call it only after the replica
// has durably committed the point: the next scan ships only what differs
// from these hashes.
func (c *Cut) Commit(seq uint64, t time.Time) error {
	hashes, err := c.Hashes()
	if err != nil {
		return err
	}
	st := &state{BlockSize: c.bs, Size: c.size, Seq: seq, Time: t, Target: c.target, Hashes: hashes}
	if err := writeState(c.statePath, st); err != nil {
		return fmt.Errorf("capture: save the block hashes of point %d at the source (%s): %w; the next sync will send every block", seq, c.statePath, err)
	}
	return nil
}

// Close stops the scan if it is still running and closes the source.
// Extents not yet released become invalid.
func (c *Cut) Close() error {
	var err error
	c.closeMu.Do(func() {
		c.cancel()
		<-c.done
		if c.mapped != nil {
			_ = syscall.Munmap(c.mapped)
			c.mapped = nil
		}
		err = c.f.Close()
	})
	return err
}
