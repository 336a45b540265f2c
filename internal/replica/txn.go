package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/zeebo/blake3"
)

// Extent is a byte range of the disk.
type Extent struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// PointMeta describes a point at its commit.
type PointMeta struct {
	// Time is the instant of the cut; zero means now.
	Time time.Time
	// Kind is "crash" (the default) or "app".
	Kind string
	// BlockHashes are the BLAKE3 hashes of every block of the whole disk at
	// this point, as the source computed them. When given, the commit checks
	// the replica's content against them and refuses on any difference; when
	// nil, they are computed from what was staged and the previous point.
	BlockHashes [][32]byte
}

// Txn stages one point. WriteExtent and WriteHole may be called from many
// goroutines at once; Commit and Abort wait for them to return.
type Txn struct {
	r  *Replica
	st *staging

	mu   sync.RWMutex // writers hold it shared; commit and abort exclusively
	done error        // set once the txn is committed, aborted or detached
}

// ErrTxnDone is wrapped by the errors of a transaction that was already
// committed, aborted, or detached by Close.
var ErrTxnDone = errors.New("the point is no longer being staged")

// Begin starts staging the next point. If a point is already staged on disk
// and not committed (an earlier process stopped), it is resumed: Staged lists
// what need not be sent again. If this replica already has an active
// transaction, Begin returns it.
func (r *Replica) Begin(ctx context.Context) (*Txn, error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.txn != nil {
		return r.txn, nil
	}
	if err := r.usable(); err != nil {
		return nil, fmt.Errorf("replica: begin point: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("replica: begin point: %w", err)
	}
	st, err := openStaging(r, true)
	if err != nil {
		return nil, fmt.Errorf("replica: begin point %d: %w", r.cat.newest()+1, hint(err))
	}
	if st.parent != r.cat.newest() || st.seq != st.parent+1 {
		st.close()
		return nil, fmt.Errorf("replica: begin point: the staged point %d does not follow the newest point %d: the staging is damaged; remove %s and send the point again", st.seq, r.cat.newest(), st.dir)
	}
	if st.direct {
		if err := st.clearUnstaged(); err != nil {
			st.close()
			return nil, fmt.Errorf("replica: begin point %d: %w", st.seq, hint(err))
		}
	}
	r.txn = &Txn{r: r, st: st}
	return r.txn, nil
}

// Seq is the sequence number the point gets at commit.
func (t *Txn) Seq() uint64 { return t.st.seq }

// Staged lists the extents already durably staged, merged and in disk
// order: after a resume, these need not be sent again.
func (t *Txn) Staged() []Extent { return t.st.extents() }

// WriteExtent stages data for off after checking that its BLAKE3 hash is
// hash, and returns once it is durable. off must be block aligned and the
// length a whole number of blocks, except for the last block of the disk.
func (t *Txn) WriteExtent(ctx context.Context, off int64, data []byte, hash [32]byte) error {
	r := t.r
	ext := Extent{Off: off, Len: int64(len(data))}
	fail := func(err error) error {
		return fmt.Errorf("replica: stage point %d: extent at %d+%d: %w", t.st.seq, off, len(data), err)
	}
	if err := r.checkExtent(ext, false); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if blake3.Sum256(data) != hash {
		return fail(errors.New("BLAKE3 mismatch: the extent was damaged on the way; send it again"))
	}
	hashes := []([32]byte){hash}
	if n := r.blocksIn(ext); n > 1 {
		hashes = make([][32]byte, n)
		for i := range hashes {
			lo := int64(i) * r.blockSize
			hashes[i] = blake3.Sum256(data[lo:min(lo+r.blockSize, ext.Len)])
		}
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.done != nil {
		return fail(t.done)
	}
	if err := t.st.data.writeAt(data, off); err != nil {
		if t.st.direct {
			// The block of the base must read as zero unless staged.
			if perr := punchHole(t.st.data.File, off, ext.Len); perr != nil {
				t.st.fail(perr)
			}
		}
		return fail(hint(err))
	}
	startWriteback(t.st.data.File, off, ext.Len)
	req := &journalReq{rec: t.st.encode(ext, false, hash, hashes), ext: ext, hashes: hashes, data: true}
	if err := t.st.journal(req); err != nil {
		return fail(hint(err))
	}
	return nil
}

// WriteHole stages an all-zero extent of any whole number of blocks.
func (t *Txn) WriteHole(ctx context.Context, off, length int64) error {
	ext := Extent{Off: off, Len: length}
	fail := func(err error) error {
		return fmt.Errorf("replica: stage point %d: hole at %d+%d: %w", t.st.seq, off, length, err)
	}
	if err := t.r.checkExtent(ext, true); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.done != nil {
		return fail(t.done)
	}
	if t.st.direct {
		// The first point stages into the base: make the hole there now.
		if err := punchHole(t.st.data.File, off, length); err != nil {
			return fail(hint(err))
		}
	}
	req := &journalReq{rec: t.st.encode(ext, true, [32]byte{}, nil), ext: ext, hole: true, data: t.st.direct}
	if err := t.st.journal(req); err != nil {
		return fail(hint(err))
	}
	return nil
}

// Abort drops the staged point. The replica stays at its newest point.
func (t *Txn) Abort() error {
	r := t.r
	r.opMu.Lock()
	defer r.opMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return fmt.Errorf("replica: abort point %d: %w", t.st.seq, t.done)
	}
	t.done = fmt.Errorf("%w: point %d was aborted", ErrTxnDone, t.st.seq)
	r.txn = nil
	// The staging goes first: a base emptied under a surviving index would
	// be taken for staged data.
	if err := t.st.remove(); err != nil {
		return fmt.Errorf("replica: abort point %d: %w", t.st.seq, err)
	}
	if t.st.direct {
		// Nothing committed lives in the base yet: empty it again (the next
		// first point does it too, should this be interrupted).
		if err := r.resetBase(); err != nil {
			return fmt.Errorf("replica: abort point %d: %w", t.st.seq, err)
		}
	}
	return nil
}

// resetBase makes the base all holes. Only for a replica with no point.
func (r *Replica) resetBase() error {
	if err := r.base.Truncate(0); err != nil {
		return err
	}
	if err := r.base.Truncate(r.size); err != nil {
		return err
	}
	return fdatasync(r.base.File)
}

// detach ends the transaction in this process without touching the disk:
// the staging stays for the next Begin. The caller holds r.opMu.
func (t *Txn) detach() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done == nil {
		t.done = fmt.Errorf("%w: the replica was closed; Begin resumes point %d", ErrTxnDone, t.st.seq)
		t.st.close()
	}
}

// checkExtent enforces the alignment rules of staged extents.
func (r *Replica) checkExtent(e Extent, hole bool) error {
	end := e.Off + e.Len
	switch {
	case e.Off < 0 || e.Len <= 0 || end > r.size || end < e.Off:
		return fmt.Errorf("outside the disk of %d bytes", r.size)
	case e.Off%r.blockSize != 0:
		return fmt.Errorf("offset not aligned to the block size %d", r.blockSize)
	case end%r.blockSize != 0 && end != r.size:
		return fmt.Errorf("length not a whole number of %d-byte blocks", r.blockSize)
	}
	return nil
}

// blocksIn is the number of blocks an aligned extent covers.
func (r *Replica) blocksIn(e Extent) int64 {
	return (e.Len + r.blockSize - 1) / r.blockSize
}

// blockLen is the length of block blk: the block size, or less for the last.
func (r *Replica) blockLen(blk int64) int64 {
	return min(r.blockSize, r.size-blk*r.blockSize)
}

func (r *Replica) zeroHashOf(blk int64) [32]byte {
	if blk == r.nblocks-1 {
		return r.zeroTail
	}
	return r.zeroHash
}
