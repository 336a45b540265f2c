package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
)

// DefaultBlockSize is the unit of change tracking, hashing and undo.
const DefaultBlockSize = 4 << 20

// Options configure a replica. Zero values take the defaults.
type Options struct {
	// BlockSize is the unit of change, hashing and undo (default 4 MiB, a
	// multiple of 4 KiB). It is fixed at Create; Open reads it from the catalog.
	BlockSize int64
	// Clock stamps points that carry no time and drives retention.
	Clock clock.Clock
	// Progress, when set, is told how far a long operation (verify, export)
	// has got: op names it, done and total are bytes.
	Progress func(op string, done, total int64)
}

// Point is a committed recovery point.
type Point struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // "crash" or "app"
	Pinned bool      `json:"pinned"`
	Bytes  int64     `json:"bytes"` // data written by this point (holes not counted)
}

// Point kinds.
const (
	KindCrash = "crash"
	KindApp   = "app"
)

// Replica is one disk at the recovery site with its recovery points. Its
// methods are safe for concurrent use; one process at a time may open it.
type Replica struct {
	dir       string
	size      int64
	blockSize int64
	nblocks   int64
	clock     clock.Clock
	progress  func(op string, done, total int64)
	lock      *os.File
	zeroHash  [32]byte // hash of an all-zero full block
	zeroTail  [32]byte // hash of an all-zero last block (when shorter)

	// opMu serialises the operations that change the catalog: commit, prune,
	// pin, begin, abort.
	opMu sync.Mutex
	txn  *Txn

	// mu guards what views read: the catalog, the open undo files and the
	// base. Readers hold it shared while they read file contents, so files
	// are closed and swapped only under the exclusive lock.
	mu     sync.RWMutex
	cat    *catalog
	undos  map[uint64]*undo
	gen    uint64 // bumped whenever undos or points change
	base   *file
	hashes [][32]byte // block hashes of the newest point
	closed bool
	broken error // set when an apply stopped half way; Open finishes it
}

// undo is the open undo file of one point.
type undo struct {
	seq    uint64
	gen    uint64
	data   *os.File
	direct *os.File       // data opened with O_DIRECT, or nil
	blocks map[int64]bool // block -> pre-image is all zero
}

func (u *undo) close() {
	u.data.Close()
	if u.direct != nil {
		u.direct.Close()
	}
}

func (o Options) withDefaults() Options {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	return o
}

// Create makes a new empty replica of a disk of size bytes in dir, which must
// not exist or be empty.
func Create(dir string, size int64, opts Options) (*Replica, error) {
	opts = opts.withDefaults()
	fail := func(err error) (*Replica, error) {
		return nil, fmt.Errorf("replica: create %s: %w", dir, err)
	}
	if size <= 0 {
		return fail(fmt.Errorf("disk size %d: want more than 0 bytes", size))
	}
	if opts.BlockSize < directAlign || opts.BlockSize%directAlign != 0 {
		return fail(fmt.Errorf("block size %d: want a multiple of %d", opts.BlockSize, directAlign))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(hint(err))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fail(err)
	}
	if len(ents) > 0 {
		return fail(errors.New("directory is not empty: open it as a replica, or choose a new directory"))
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return fail(err)
	}
	err = func() error {
		for _, d := range []string{pointsDir, undoDir} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
				return err
			}
		}
		b, err := os.OpenFile(filepath.Join(dir, baseName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		defer b.Close()
		if err := b.Truncate(size); err != nil {
			return err
		}
		if err := b.Sync(); err != nil {
			return err
		}
		cat := &catalog{Format: FormatVersion, Size: size, BlockSize: opts.BlockSize, Points: []catalogPoint{}}
		// The catalog comes last: a directory without one is not a replica.
		return writeFileAtomic(filepath.Join(dir, catalogName), cat.marshal())
	}()
	lock.Close()
	if err != nil {
		return fail(hint(err))
	}
	return Open(dir, opts)
}

// Open opens the replica in dir. An apply that was interrupted after its
// intent was recorded is finished first, so the replica is at the newest
// point of its catalog; a point that was only being staged stays staged, to
// be resumed by Begin.
func Open(dir string, opts Options) (*Replica, error) {
	opts = opts.withDefaults()
	fail := func(err error) (*Replica, error) {
		return nil, fmt.Errorf("replica: open %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, catalogName)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fail(errors.New("no catalog.json: not a replica directory (check --replica, or create one with a first sync)"))
		}
		return fail(err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		if errors.Is(err, errLocked) {
			return fail(errors.New("the replica is in use by another standby process: stop it or wait for it to finish"))
		}
		return fail(err)
	}
	r := &Replica{dir: dir, clock: opts.Clock, progress: opts.Progress, lock: lock, undos: map[uint64]*undo{}}
	if err := r.load(); err != nil {
		r.closeFiles()
		return fail(err)
	}
	return r, nil
}

func (r *Replica) load() error {
	cat, err := readCatalog(filepath.Join(r.dir, catalogName))
	if err != nil {
		return err
	}
	r.cat = cat
	r.size, r.blockSize = cat.Size, cat.BlockSize
	r.nblocks = (r.size + r.blockSize - 1) / r.blockSize
	r.zeroHash = blake3.Sum256(make([]byte, r.blockSize))
	r.zeroTail = r.zeroHash
	if tail := r.size % r.blockSize; tail != 0 {
		r.zeroTail = blake3.Sum256(make([]byte, tail))
	}
	if r.base, err = openFile(filepath.Join(r.dir, baseName), os.O_RDWR); err != nil {
		return err
	}
	if st, err := r.base.Stat(); err != nil {
		return err
	} else if st.Size() != r.size {
		return fmt.Errorf("base is %d bytes, the catalog says %d: the replica is damaged", st.Size(), r.size)
	}
	if err := r.recoverIntent(); err != nil {
		return fmt.Errorf("finish the interrupted apply: %w", err)
	}
	for _, p := range r.cat.Points {
		if p.UndoGen == 0 {
			continue
		}
		u, err := r.openUndo(p.Seq, p.UndoGen)
		if err != nil {
			return err
		}
		r.undos[p.Seq] = u
	}
	if n := r.cat.newest(); n != 0 {
		if r.hashes, err = readHashes(hashesPath(r.dir, n), n, r.size, r.blockSize); err != nil {
			return err
		}
	}
	if err := r.dropStaleStaging(); err != nil {
		return err
	}
	return r.removeStrays()
}

func (r *Replica) openUndo(seq, gen uint64) (*undo, error) {
	blocks, err := readUndoIndex(undoIndexPath(r.dir, seq, gen), seq, gen, r.nblocks)
	if err != nil {
		return nil, fmt.Errorf("undo of point %d: %w", seq, err)
	}
	f, err := os.Open(undoDataPath(r.dir, seq))
	if err != nil {
		return nil, fmt.Errorf("undo of point %d: %w", seq, err)
	}
	return &undo{seq: seq, gen: gen, data: f, direct: openDirect(f.Name()), blocks: blocks}, nil
}

// removeStrays deletes files no committed point refers to: leftovers of an
// apply or a merge that stopped before its catalog commit.
func (r *Replica) removeStrays() error {
	want := map[string]bool{}
	for _, p := range r.cat.Points {
		want[filepath.Base(hashesPath(r.dir, p.Seq))] = true
		if p.UndoGen != 0 {
			want[filepath.Base(undoDataPath(r.dir, p.Seq))] = true
			want[filepath.Base(undoIndexPath(r.dir, p.Seq, p.UndoGen))] = true
		}
	}
	// The hashes of a staged point are rewritten at its commit; keep nothing else.
	for _, sub := range []string{pointsDir, undoDir} {
		ents, err := os.ReadDir(filepath.Join(r.dir, sub))
		if err != nil {
			return err
		}
		removed := false
		for _, e := range ents {
			if !want[e.Name()] {
				if err := os.Remove(filepath.Join(r.dir, sub, e.Name())); err != nil {
					return err
				}
				removed = true
			}
		}
		if removed {
			if err := syncDir(filepath.Join(r.dir, sub)); err != nil {
				return err
			}
		}
	}
	os.Remove(filepath.Join(r.dir, catalogName+".tmp"))
	os.Remove(filepath.Join(r.dir, intentName+".tmp"))
	return nil
}

// Close releases the replica's files and its lock. An active transaction
// stays staged on disk and is resumed by the next Begin.
func (r *Replica) Close() error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.txn != nil {
		r.txn.detach()
		r.txn = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.closeFiles()
}

func (r *Replica) closeFiles() error {
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	for _, u := range r.undos {
		u.close()
	}
	if r.base != nil {
		keep(r.base.Close())
	}
	if r.lock != nil {
		keep(r.lock.Close())
	}
	return first
}

// Dir is the replica's directory.
func (r *Replica) Dir() string { return r.dir }

// Size is the size of the disk in bytes.
func (r *Replica) Size() int64 { return r.size }

// BlockSize is the unit of change, hashing and undo.
func (r *Replica) BlockSize() int64 { return r.blockSize }

// Points lists the committed points, oldest first.
func (r *Replica) Points() []Point {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Point, len(r.cat.Points))
	for i, p := range r.cat.Points {
		out[i] = Point{Seq: p.Seq, Time: p.Time, Kind: p.Kind, Pinned: p.Pinned, Bytes: p.Bytes}
	}
	return out
}

// Pin keeps a point from retention (on) or releases it (off).
func (r *Replica) Pin(seq uint64, on bool) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.RLock()
	cat := r.cat.clone()
	r.mu.RUnlock()
	i := cat.find(seq)
	if i < 0 {
		return fmt.Errorf("replica: pin point %d: %w", seq, r.noPoint(seq))
	}
	cat.Points[i].Pinned = on
	if err := writeFileAtomic(filepath.Join(r.dir, catalogName), cat.marshal()); err != nil {
		return fmt.Errorf("replica: pin point %d: %w", seq, hint(err))
	}
	r.mu.Lock()
	r.cat = cat
	r.mu.Unlock()
	return nil
}

// ErrNoPoint is wrapped by errors about a point that is not in the catalog.
var ErrNoPoint = errors.New("no such point")

func (r *Replica) noPoint(seq uint64) error {
	var seqs []string
	for _, p := range r.cat.Points {
		seqs = append(seqs, strconv.FormatUint(p.Seq, 10))
	}
	if len(seqs) == 0 {
		return fmt.Errorf("%w: the replica has no committed point yet", ErrNoPoint)
	}
	return fmt.Errorf("%w %d: the replica holds %s (see `standby replica points`)", ErrNoPoint, seq, strings.Join(seqs, ", "))
}

// intent is recorded once the undo of the previous point is durable and
// before the base is touched: it names the point being applied and the
// catalog that commits it.
type intent struct {
	Format  int      `json:"format"`
	Seq     uint64   `json:"seq"`
	Catalog *catalog `json:"catalog"`
}

// recoverIntent finishes an apply that recorded its intent: the staged
// extents are written to the base again (idempotent) and the catalog is
// committed. It never goes back to the previous point: its undo is complete,
// but the base may be half overwritten.
func (r *Replica) recoverIntent() error {
	path := filepath.Join(r.dir, intentName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var in intent
	if err := json.Unmarshal(b, &in); err != nil || in.Catalog == nil {
		// The intent is written atomically, so this is damage, not a crash.
		return fmt.Errorf("%s is damaged: restore it, or remove it and run verify", path)
	}
	if in.Format > FormatVersion {
		return fmt.Errorf("%s is format version %d, newer than this standby reads (%d): upgrade standby", path, in.Format, FormatVersion)
	}
	if r.cat.newest() < in.Seq {
		st, err := openStaging(r, false)
		if err != nil {
			return err
		}
		if st == nil || st.seq != in.Seq {
			return fmt.Errorf("the staging of point %d is missing: the replica is damaged", in.Seq)
		}
		err = st.replay(r.base)
		st.close()
		if err != nil {
			return err
		}
		if err := fdatasync(r.base.File); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(r.dir, catalogName), in.Catalog.marshal()); err != nil {
			return err
		}
		r.cat = in.Catalog
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return syncDir(r.dir)
}

// dropStaleStaging removes a staging that can never be committed: one whose
// point is already in the catalog (the crash came after the commit), or one
// that was being created and holds nothing acknowledged.
func (r *Replica) dropStaleStaging() error {
	dir := filepath.Join(r.dir, stagingDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "txn.json"))
	stale := errors.Is(err, os.ErrNotExist)
	if err != nil && !stale {
		return err
	}
	if !stale {
		var tx stagingTxn
		if err := json.Unmarshal(b, &tx); err != nil {
			return fmt.Errorf("%s is damaged (%v): remove %s to drop the staged point", filepath.Join(dir, "txn.json"), err, dir)
		}
		stale = tx.Seq <= r.cat.newest()
	}
	if !stale {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return syncDir(r.dir)
}
