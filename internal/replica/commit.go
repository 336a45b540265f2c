package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/zeebo/blake3"
)

// Commit applies the staged point and makes it the newest: the undo of the
// previous point is written and synced, the intent recorded, the base
// overwritten and synced, and the catalog replaced atomically. A crash at
// any moment leaves the replica at the previous point (before the intent) or
// at this one (Open finishes the apply after the intent), never between.
func (t *Txn) Commit(ctx context.Context, meta PointMeta) (Point, error) {
	r := t.r
	r.opMu.Lock()
	defer r.opMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return Point{}, fmt.Errorf("replica: commit point %d: %w", t.st.seq, t.done)
	}
	if err := r.usable(); err != nil {
		return Point{}, fmt.Errorf("replica: commit point %d: %w", t.st.seq, err)
	}
	p, err := r.commit(ctx, t.st, meta)
	var ve *VerifyError
	if errors.As(err, &ve) {
		return Point{}, err
	}
	if err != nil {
		return Point{}, fmt.Errorf("replica: commit point %d: %w", t.st.seq, hint(err))
	}
	t.done = fmt.Errorf("%w: point %d is committed", ErrTxnDone, t.st.seq)
	r.txn = nil
	return p, nil
}

func (r *Replica) usable() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return errors.New("the replica is closed")
	}
	if r.broken != nil {
		return r.broken
	}
	return nil
}

func (r *Replica) commit(ctx context.Context, st *staging, meta PointMeta) (Point, error) {
	if st.failed != nil {
		return Point{}, st.failed
	}
	if meta.Kind == "" {
		meta.Kind = KindCrash
	}
	if meta.Kind != KindCrash && meta.Kind != KindApp {
		return Point{}, fmt.Errorf("kind %q: want %q or %q", meta.Kind, KindCrash, KindApp)
	}
	if meta.Time.IsZero() {
		meta.Time = r.clock.Now()
	}
	meta.Time = meta.Time.UTC()
	if meta.BlockHashes != nil && int64(len(meta.BlockHashes)) != r.nblocks {
		return Point{}, fmt.Errorf("%d block hashes given for a disk of %d blocks", len(meta.BlockHashes), r.nblocks)
	}
	blocks := st.sortedBlocks()

	// The new point's block hashes: the previous point's, with the staged
	// blocks replaced. Staged data is reread and rehashed first, so damage
	// in staging stops the commit before anything is touched.
	hashes := make([][32]byte, r.nblocks)
	if st.direct {
		for i := range hashes {
			hashes[i] = r.zeroHashOf(int64(i))
		}
	} else {
		copy(hashes, r.hashes)
	}
	buf := getAligned(int(r.blockSize))
	defer putAligned(buf)
	for _, blk := range blocks {
		if err := ctx.Err(); err != nil {
			return Point{}, err
		}
		st.mu.Lock()
		sb := st.blocks[blk]
		st.mu.Unlock()
		if !sb.hole && !st.direct {
			n := r.blockLen(blk)
			if _, err := st.data.ReadAt(buf.b[:n], blk*r.blockSize); err != nil {
				return Point{}, fmt.Errorf("read staged block %d: %w", blk, err)
			}
			if blake3.Sum256(buf.b[:n]) != sb.hash {
				return Point{}, &VerifyError{Op: "commit", Seq: st.seq, Damage: []Damage{{Block: blk, Offset: blk * r.blockSize, File: "staging", Path: filepath.Join(st.dir, "data")}},
					Hint: "the staged data is damaged: abort the point and send it again"}
			}
		}
		hashes[blk] = sb.hash
	}
	if meta.BlockHashes != nil {
		for i, h := range meta.BlockHashes {
			if h != hashes[i] {
				return Point{}, fmt.Errorf("block %d (offset %d) differs from the source's hash: the source's record of the previous point does not match this replica; resync the disk in full", i, int64(i)*r.blockSize)
			}
		}
	}
	var changed []int64
	for _, blk := range blocks {
		if st.direct || hashes[blk] != r.hashes[blk] {
			changed = append(changed, blk)
		}
	}

	point := catalogPoint{Seq: st.seq, Time: meta.Time, Kind: meta.Kind, Bytes: st.dataLen}
	r.mu.RLock()
	cat := r.cat.clone()
	r.mu.RUnlock()
	if n := len(cat.Points); n > 0 {
		cat.Points[n-1].UndoGen = 1
	}
	cat.Points = append(cat.Points, point)

	if err := writeFileSync(hashesPath(r.dir, st.seq), encodeHashes(st.seq, r.size, r.blockSize, hashes)); err != nil {
		return Point{}, err
	}
	if err := syncDir(filepath.Join(r.dir, pointsDir)); err != nil {
		return Point{}, err
	}

	if st.direct {
		// The first point is already in the base, synced by the journal.
		if err := ctx.Err(); err != nil {
			return Point{}, err
		}
		if err := writeFileAtomic(filepath.Join(r.dir, catalogName), cat.marshal()); err != nil {
			return Point{}, err
		}
		r.mu.Lock()
		r.cat, r.hashes = cat, hashes
		r.gen++
		r.mu.Unlock()
	} else {
		u, err := r.writeUndo(st.parent, changed, buf.b)
		if err != nil {
			os.Remove(undoDataPath(r.dir, st.parent))
			os.Remove(undoIndexPath(r.dir, st.parent, 1))
			return Point{}, fmt.Errorf("write the undo of point %d: %w", st.parent, err)
		}
		if err := ctx.Err(); err != nil {
			u.close()
			return Point{}, err
		}
		if err := writeFileAtomic(filepath.Join(r.dir, intentName), (&intent{Format: FormatVersion, Seq: st.seq, Catalog: cat}).marshal()); err != nil {
			u.close()
			return Point{}, fmt.Errorf("record the intent: %w", err)
		}
		// From here on the point is applied: an error leaves the replica to
		// be finished by Open, and views of older points already read the
		// new undo instead of the base.
		r.mu.Lock()
		r.undos[st.parent] = u
		r.gen++
		r.mu.Unlock()
		if err := r.overwriteBase(st, changed, buf.b); err != nil {
			return Point{}, r.breakWith(err)
		}
		if err := writeFileAtomic(filepath.Join(r.dir, catalogName), cat.marshal()); err != nil {
			return Point{}, r.breakWith(err)
		}
		r.mu.Lock()
		r.cat, r.hashes = cat, hashes
		r.gen++
		r.mu.Unlock()
		if err := os.Remove(filepath.Join(r.dir, intentName)); err != nil {
			return Point{}, r.breakWith(err)
		}
	}
	if err := st.remove(); err != nil {
		return Point{}, r.breakWith(err)
	}
	return Point{Seq: point.Seq, Time: point.Time, Kind: point.Kind, Bytes: point.Bytes}, nil
}

// breakWith stops further changes after a failure half way through an
// apply; reopening the replica finishes it.
func (r *Replica) breakWith(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.broken = fmt.Errorf("an apply was interrupted (%v): close and reopen the replica to finish it", err)
	return fmt.Errorf("%w; close and reopen the replica to finish the apply", err)
}

// writeUndo saves the pre-images of the changed blocks of the base, the
// content of point seq there, into a new undo file, and syncs it.
func (r *Replica) writeUndo(seq uint64, changed []int64, buf []byte) (*undo, error) {
	f, err := openFile(undoDataPath(r.dir, seq), os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	if err := f.Truncate(r.size); err != nil {
		return nil, err
	}
	blocks := make(map[int64]bool, len(changed))
	for _, blk := range changed {
		off, n := blk*r.blockSize, r.blockLen(blk)
		if _, err := r.base.ReadAt(buf[:n], off); err != nil {
			return nil, fmt.Errorf("read base block %d: %w", blk, err)
		}
		if isZero(buf[:n]) {
			blocks[blk] = true
			continue
		}
		blocks[blk] = false
		if err := f.writeAt(buf[:n], off); err != nil {
			return nil, err
		}
	}
	if err := fdatasync(f.File); err != nil {
		return nil, err
	}
	if err := writeFileSync(undoIndexPath(r.dir, seq, 1), encodeUndoIndex(seq, 1, blocks)); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Join(r.dir, undoDir)); err != nil {
		return nil, err
	}
	ok = true
	return &undo{seq: seq, gen: 1, data: f.File, direct: f.direct, blocks: blocks}, nil
}

// overwriteBase writes the changed staged blocks into the base and syncs it.
func (r *Replica) overwriteBase(st *staging, changed []int64, buf []byte) error {
	for _, blk := range changed {
		if err := st.copyBlock(r.base, blk, buf); err != nil {
			return err
		}
	}
	return fdatasync(r.base.File)
}

func (in *intent) marshal() []byte {
	b, err := json.Marshal(in)
	if err != nil {
		panic(err)
	}
	return b
}
