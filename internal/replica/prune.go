package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Prune applies retention and returns the points it removed. Removing the
// oldest point deletes its undo file; removing a point in the middle merges
// its undo into the previous point's (which keeps its own pre-image where
// both hold one). Each removal is committed on its own, so a crash leaves
// the points either before or after that removal.
func (r *Replica) Prune(ctx context.Context, p Retention) ([]uint64, error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if err := r.usable(); err != nil {
		return nil, fmt.Errorf("replica: prune: %w", err)
	}
	now := r.clock.Now()
	dropped := []uint64{}
	for _, d := range p.Plan(r.Points(), now) {
		if d.Keep {
			continue
		}
		if err := ctx.Err(); err != nil {
			return dropped, fmt.Errorf("replica: prune: %w", err)
		}
		if err := r.drop(d.Seq); err != nil {
			return dropped, fmt.Errorf("replica: prune point %d: %w", d.Seq, hint(err))
		}
		dropped = append(dropped, d.Seq)
	}
	return dropped, nil
}

// Drop removes one point that is neither the newest nor pinned.
func (r *Replica) Drop(ctx context.Context, seq uint64) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if err := r.usable(); err != nil {
		return fmt.Errorf("replica: drop point %d: %w", seq, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replica: drop point %d: %w", seq, err)
	}
	if err := r.drop(seq); err != nil {
		return fmt.Errorf("replica: drop point %d: %w", seq, hint(err))
	}
	return nil
}

// drop removes point seq. The caller holds r.opMu.
func (r *Replica) drop(seq uint64) error {
	r.mu.RLock()
	cat := r.cat.clone()
	r.mu.RUnlock()
	i := cat.find(seq)
	switch {
	case i < 0:
		return r.noPoint(seq)
	case i == len(cat.Points)-1:
		return errors.New("it is the newest point, which is never removed")
	case cat.Points[i].Pinned:
		return errors.New("it is pinned: unpin it first")
	}
	cur := r.undos[seq]
	var merged *undo
	garbage := []string{undoDataPath(r.dir, seq), undoIndexPath(r.dir, seq, cur.gen), hashesPath(r.dir, seq)}
	if i > 0 {
		prev := r.undos[cat.Points[i-1].Seq]
		var err error
		if merged, err = r.merge(prev, cur); err != nil {
			return fmt.Errorf("merge its undo into point %d's: %w", prev.seq, err)
		}
		cat.Points[i-1].UndoGen = merged.gen
		garbage = append(garbage, undoIndexPath(r.dir, prev.seq, prev.gen))
	}
	cat.Points = append(cat.Points[:i], cat.Points[i+1:]...)
	if err := writeFileAtomic(filepath.Join(r.dir, catalogName), cat.marshal()); err != nil {
		return err
	}
	r.mu.Lock()
	r.cat = cat
	delete(r.undos, seq)
	if merged != nil {
		r.undos[merged.seq] = merged
	}
	r.gen++
	r.mu.Unlock()
	cur.close()
	for _, g := range garbage {
		if err := os.Remove(g); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := syncDir(filepath.Join(r.dir, undoDir)); err != nil {
		return err
	}
	return syncDir(filepath.Join(r.dir, pointsDir))
}

// merge returns prev's undo extended with the blocks only next holds, copied
// into prev's data file (at offsets prev's index does not use, so prev stays
// valid until the catalog names the new index). The new index is durable.
func (r *Replica) merge(prev, next *undo) (*undo, error) {
	blocks := make(map[int64]bool, len(prev.blocks)+len(next.blocks))
	for blk, zero := range prev.blocks {
		blocks[blk] = zero
	}
	f, err := openFile(undoDataPath(r.dir, prev.seq), os.O_RDWR)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := getAligned(int(r.blockSize))
	defer putAligned(buf)
	for blk, zero := range next.blocks {
		if _, ok := blocks[blk]; ok {
			continue // prev's pre-image is the older content: it wins
		}
		blocks[blk] = zero
		if zero {
			continue
		}
		off, n := blk*r.blockSize, r.blockLen(blk)
		if _, err := next.data.ReadAt(buf.b[:n], off); err != nil {
			return nil, fmt.Errorf("read undo %d block %d: %w", next.seq, blk, err)
		}
		if err := f.writeAt(buf.b[:n], off); err != nil {
			return nil, err
		}
	}
	if err := fdatasync(f.File); err != nil {
		return nil, err
	}
	gen := prev.gen + 1
	if err := writeFileSync(undoIndexPath(r.dir, prev.seq, gen), encodeUndoIndex(prev.seq, gen, blocks)); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Join(r.dir, undoDir)); err != nil {
		return nil, err
	}
	return &undo{seq: prev.seq, gen: gen, data: prev.data, direct: prev.direct, blocks: blocks}, nil
}
