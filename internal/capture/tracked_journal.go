package capture

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"
)

// A tracked disk keeps two small files at the source, beside the disk (or
// in a state directory), so that a gap in tracking is always noticed:
//
// The intent log is a write-intent bitmap, as md's: one bit per region
// (1 MiB by default) that may differ from the replica's newest point. A bit
// is set durably (written and fdatasync'd) before the first write to its
// region reaches the disk, and cleared lazily once the region's writes are
// in a committed point and it has been quiet for a while. After a crash,
// the set regions are exactly what must be sent again.
//
//	magic "STBYINTN" | version u32 | disk size u64 | region u64 |
//	target length u32 | target | BLAKE3 of the above | zero padding to 4 KiB |
//	bitmap, one bit per region, from offset 4096
//
// The clean file is written at a clean shutdown: the exact dirty map (one
// bit per grain) not yet in a committed point, the replica's newest point,
// and the disk's size and modification time. It is removed, durably, as
// soon as the disk is opened again, before any write is accepted: a clean
// file is therefore never stale.
//
//	magic "STBYCLEN" | version u32 | disk size u64 | grain u64 | seq u64 |
//	point time (unix ns) i64 | disk mtime (unix ns) i64 | target length u32 |
//	target | word count u64 | words (u64 each) | BLAKE3 of all the above
//
// Integers are little-endian.
const (
	intentMagic   = "STBYINTN"
	cleanMagic    = "STBYCLEN"
	journalVer    = 1
	intentHeader  = 4096
	defaultRegion = 1 << 20
)

func journalPaths(dir, source, target string) (intent, clean string) {
	sum := blake3.Sum256([]byte(target))
	id := hex.EncodeToString(sum[:6])
	base := "." + filepath.Base(source) + ".standby-"
	return filepath.Join(dir, base+"intent-"+id), filepath.Join(dir, base+"clean-"+id)
}

// intentLog is the open write-intent bitmap of one disk.
type intentLog struct {
	f       *os.File
	region  int64
	nreg    int64
	mu      sync.Mutex // serialises writes to the file
	mem     bitmap     // bits believed set on disk (a superset is safe)
	pending []atomic.Int32
	lastGen []atomic.Uint64 // newest active-map generation a region was written in
	lastAt  []atomic.Int64  // when (unix ns)
	buf     []byte
	syncs   atomic.Int64
}

func encodeIntentHeader(size, region int64, target string) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString(intentMagic)
	_ = binary.Write(&b, le, uint32(journalVer))
	_ = binary.Write(&b, le, uint64(size))
	_ = binary.Write(&b, le, uint64(region))
	_ = binary.Write(&b, le, uint32(len(target)))
	b.WriteString(target)
	sum := blake3.Sum256(b.Bytes())
	b.Write(sum[:])
	out := make([]byte, intentHeader)
	copy(out, b.Bytes())
	return out
}

// readIntent loads the intent bitmap at path if its header matches. It
// returns (nil, why) when the file is missing or cannot be trusted.
func readIntent(path string, size, region int64, target string) (bitmap, string) {
	p, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "no write-intent log of this disk exists"
	}
	if err != nil {
		return nil, fmt.Sprintf("the write-intent log %s is unreadable: %v", path, err)
	}
	want := encodeIntentHeader(size, region, target)
	nreg := (size + region - 1) / region
	if len(p) < intentHeader+int((nreg+7)/8) || !bytes.Equal(p[:intentHeader], want) {
		if len(p) >= len(intentMagic) && string(p[:len(intentMagic)]) == intentMagic && len(p) >= intentHeader {
			return nil, fmt.Sprintf("the write-intent log %s is of another disk size, region or replica (was the disk resized?)", path)
		}
		return nil, fmt.Sprintf("the write-intent log %s is damaged", path)
	}
	bm := newBitmap(nreg)
	for r := int64(0); r < nreg; r++ {
		if p[intentHeader+int(r/8)]&(1<<(r%8)) != 0 {
			bm.set(r)
		}
	}
	return bm, ""
}

// createIntent writes a new intent log holding set, durably.
func createIntent(path string, size, region int64, target string, set bitmap) (*intentLog, error) {
	nreg := (size + region - 1) / region
	in := &intentLog{region: region, nreg: nreg, mem: newBitmap(nreg),
		pending: make([]atomic.Int32, nreg), lastGen: make([]atomic.Uint64, nreg), lastAt: make([]atomic.Int64, nreg),
		buf: make([]byte, (nreg+7)/8)}
	for r := set.next(0); r >= 0; r = set.next(r + 1) {
		in.mem.set(r)
	}
	in.fill()
	data := append(encodeIntentHeader(size, region, target), in.buf...)
	if err := replaceFile(path, data); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	in.f = f
	return in, nil
}

// fill copies mem into buf. The caller holds mu (or owns in).
func (in *intentLog) fill() {
	clear(in.buf)
	for r := in.mem.next(0); r >= 0; r = in.mem.next(r + 1) {
		in.buf[r/8] |= 1 << (r % 8)
	}
}

// begin announces a write to [off, off+n): the regions it touches are made
// durable in the log before it returns. end must follow once the write is
// done.
func (in *intentLog) begin(off, n int64) error {
	lo, hi := off/in.region, (off+n-1)/in.region
	need := false
	for r := lo; r <= hi; r++ {
		in.pending[r].Add(1)
		if !in.mem.has(r) {
			need = true
		}
	}
	if !need {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	changed := false
	for r := lo; r <= hi; r++ {
		if !in.mem.has(r) {
			in.mem.set(r)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	in.fill()
	b0, b1 := lo/8, hi/8+1
	if _, err := in.f.WriteAt(in.buf[b0:b1], intentHeader+b0); err != nil {
		in.undo(lo, hi)
		return fmt.Errorf("record the write intent: %w", err)
	}
	in.syncs.Add(1)
	if err := fdatasync(in.f); err != nil {
		in.undo(lo, hi)
		return fmt.Errorf("sync the write intent: %w", err)
	}
	return nil
}

func (in *intentLog) undo(lo, hi int64) {
	for r := lo; r <= hi; r++ {
		in.pending[r].Add(-1)
	}
}

// end closes a write begun with begin: it landed in the active map of
// generation gen at time now.
func (in *intentLog) end(off, n int64, gen uint64, now int64) {
	lo, hi := off/in.region, (off+n-1)/in.region
	for r := lo; r <= hi; r++ {
		for {
			g := in.lastGen[r].Load()
			if g >= gen || in.lastGen[r].CompareAndSwap(g, gen) {
				break
			}
		}
		in.lastAt[r].Store(now)
		in.pending[r].Add(-1)
	}
}

// keep marks every region of set as written in generation gen, so they stay
// in the log until a point holding gen is committed.
func (in *intentLog) keep(set bitmap, grain int64, gen uint64) {
	for g := set.next(0); g >= 0; g = set.next(g + 1) {
		r := g * grain / in.region
		in.lastGen[r].Store(max(in.lastGen[r].Load(), gen))
	}
}

// clearQuiet clears the regions whose writes are all in committed
// generations (<= gen) and that were last written before cutoff. Clearing
// is not synced: a bit that comes back after a crash only costs a resend.
func (in *intentLog) clearQuiet(gen uint64, cutoff int64) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	changed := false
	for r := in.mem.next(0); r >= 0; r = in.mem.next(r + 1) {
		if in.lastGen[r].Load() > gen || in.lastAt[r].Load() >= cutoff {
			continue
		}
		atomic.AndUint64(&in.mem[r/64], ^(uint64(1) << (r % 64)))
		// A write that started meanwhile either saw the bit cleared (and
		// sets it again itself) or is counted here: then keep the bit.
		if in.pending[r].Load() != 0 || in.lastGen[r].Load() > gen || in.lastAt[r].Load() >= cutoff {
			in.mem.set(r)
			continue
		}
		changed = true
	}
	if !changed {
		return nil
	}
	in.fill()
	if _, err := in.f.WriteAt(in.buf, intentHeader); err != nil {
		return fmt.Errorf("clear the write intent: %w", err)
	}
	return nil
}

func (in *intentLog) close() error {
	if in == nil || in.f == nil {
		return nil
	}
	return in.f.Close()
}

// cleanState is the decoded clean file.
type cleanState struct {
	Size   int64
	Grain  int64
	Seq    uint64
	Time   time.Time
	MTime  int64
	Target string
	Dirty  bitmap
}

func (c *cleanState) encode() []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString(cleanMagic)
	_ = binary.Write(&b, le, uint32(journalVer))
	_ = binary.Write(&b, le, uint64(c.Size))
	_ = binary.Write(&b, le, uint64(c.Grain))
	_ = binary.Write(&b, le, c.Seq)
	_ = binary.Write(&b, le, c.Time.UnixNano())
	_ = binary.Write(&b, le, c.MTime)
	_ = binary.Write(&b, le, uint32(len(c.Target)))
	b.WriteString(c.Target)
	_ = binary.Write(&b, le, uint64(len(c.Dirty)))
	for i := range c.Dirty {
		_ = binary.Write(&b, le, atomic.LoadUint64(&c.Dirty[i]))
	}
	sum := blake3.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

func decodeClean(p []byte) (*cleanState, error) {
	le := binary.LittleEndian
	fixed := len(cleanMagic) + 4 + 5*8 + 4
	if len(p) < fixed+8+32 || string(p[:len(cleanMagic)]) != cleanMagic {
		return nil, errors.New("not a clean-shutdown file")
	}
	q, err := unseal(p, cleanMagic, journalVer)
	if err != nil {
		return nil, err
	}
	c := &cleanState{
		Size:  int64(le.Uint64(q[0:])),
		Grain: int64(le.Uint64(q[8:])),
		Seq:   le.Uint64(q[16:]),
		Time:  time.Unix(0, int64(le.Uint64(q[24:]))),
		MTime: int64(le.Uint64(q[32:])),
	}
	q = q[40:]
	tl := int(le.Uint32(q))
	q = q[4:]
	if tl > len(q)-8 {
		return nil, errors.New("damaged: target length")
	}
	c.Target = string(q[:tl])
	q = q[tl:]
	n := le.Uint64(q)
	q = q[8:]
	if uint64(len(q)) != n*8 {
		return nil, errors.New("damaged: dirty map length")
	}
	c.Dirty = make(bitmap, n)
	for i := range c.Dirty {
		c.Dirty[i] = le.Uint64(q[i*8:])
	}
	return c, nil
}

// replaceFile writes data to path atomically and durably: a temporary
// file, fsync, rename, fsync of the directory.
func replaceFile(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// removeDurably removes path and syncs its directory, so the removal
// survives a crash. A missing file is not an error.
func removeDurably(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
