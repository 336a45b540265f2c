package replica

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// The staging of the incoming point lives in staging/: txn.json names the
// point, data holds the staged extents at their own offsets (a sparse file
// the size of the disk), index is an append-only list of records, one per
// staged extent, each sealed with a CRC. A record is appended only after its
// data is durable, and an extent is acknowledged only after its record is:
// so every record that survives a crash describes data that is there. The
// first point of a replica stages straight into the base (nothing committed
// there yet to protect), which halves the bytes written by an initial sync.

const (
	recMagic = 0x52584253 // "SBXR"
	recHead  = 4 + 4 + 8 + 8 + 32 + 4
	kindData = 1
	kindHole = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type stagingTxn struct {
	Format int    `json:"format"`
	Seq    uint64 `json:"seq"`
	Parent uint64 `json:"parent"`
	// Direct says the extents are written straight into the base: the point
	// is the replica's first.
	Direct bool `json:"direct"`
}

type staging struct {
	r      *Replica
	dir    string
	seq    uint64
	parent uint64
	direct bool
	data   *file // staging/data, or the base when direct
	index  *os.File

	mu       sync.Mutex
	indexOff int64
	recs     []Extent              // staged extents in the order of their records
	blocks   map[int64]stagedBlock // the newest staged content of each block
	holes    int64                 // bytes staged as holes
	dataLen  int64                 // bytes staged as data
	failed   error                 // sticky: the index may have a torn tail
	queue    []*journalReq         // records waiting for the next group commit
	flushMu  sync.Mutex            // one group commit at a time
}

type stagedBlock struct {
	hole bool
	hash [32]byte
}

type journalReq struct {
	rec    []byte
	ext    Extent
	hole   bool
	hashes [][32]byte // per block
	data   bool
	done   chan error
}

func stagingPath(dir string, name string) string { return filepath.Join(dir, stagingDir, name) }

// openStaging opens the staging on disk; with create it makes a new one for
// the next point when there is none. It returns nil, nil when there is none
// and create is false.
func openStaging(r *Replica, create bool) (*staging, error) {
	dir := filepath.Join(r.dir, stagingDir)
	b, err := os.ReadFile(filepath.Join(dir, "txn.json"))
	var tx stagingTxn
	switch {
	case errors.Is(err, os.ErrNotExist):
		if !create {
			return nil, nil
		}
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		newest := r.cat.newest()
		tx = stagingTxn{Format: FormatVersion, Seq: newest + 1, Parent: newest, Direct: newest == 0}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		if err := syncDir(r.dir); err != nil {
			return nil, err
		}
		if tx.Direct {
			// Start from an all-zero base: an earlier first point that was
			// aborted or interrupted may have left data in it.
			if err := r.resetBase(); err != nil {
				return nil, err
			}
		} else {
			f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return nil, err
			}
			err = f.Truncate(r.size)
			if err == nil {
				err = f.Sync()
			}
			f.Close()
			if err != nil {
				return nil, err
			}
		}
		f, err := os.OpenFile(filepath.Join(dir, "index"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, err
		}
		f.Close()
		b, _ := json.Marshal(tx)
		// txn.json comes last: a staging directory without it holds nothing
		// that was acknowledged and is removed.
		if err := writeFileAtomic(filepath.Join(dir, "txn.json"), b); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, &tx); err != nil {
			return nil, fmt.Errorf("staging/txn.json is damaged (%v): abort the staged point", err)
		}
		if tx.Format > FormatVersion {
			return nil, fmt.Errorf("staging/txn.json is format version %d, newer than this standby reads (%d): upgrade standby", tx.Format, FormatVersion)
		}
	}
	st := &staging{r: r, dir: dir, seq: tx.Seq, parent: tx.Parent, direct: tx.Direct, blocks: map[int64]stagedBlock{}}
	if tx.Direct {
		st.data = r.base
	} else if st.data, err = openFile(filepath.Join(dir, "data"), os.O_RDWR); err != nil {
		return nil, err
	}
	if st.index, err = os.OpenFile(filepath.Join(dir, "index"), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		st.close()
		return nil, err
	}
	if err := st.load(); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

// clearUnstaged punches every block of the base that no record covers: a
// write that was in flight when the process stopped may have left data there
// that no one acknowledged, and the first point's unstaged blocks must be
// zero.
func (st *staging) clearUnstaged() error {
	r := st.r
	from := int64(0)
	punch := func(to int64) error {
		if to <= from {
			return nil
		}
		return punchHole(r.base.File, from, to-from)
	}
	for _, e := range st.extents() {
		if err := punch(e.Off); err != nil {
			return err
		}
		from = e.Off + e.Len
	}
	if err := punch(r.size); err != nil {
		return err
	}
	return fdatasync(r.base.File)
}

func (st *staging) close() {
	if st.data != nil && !st.direct {
		st.data.Close()
	}
	if st.index != nil {
		st.index.Close()
	}
}

// remove deletes the staging from disk.
func (st *staging) remove() error {
	st.close()
	if err := os.RemoveAll(st.dir); err != nil {
		return err
	}
	return syncDir(st.r.dir)
}

// load reads the index. A torn last record (a crash while appending it, never
// acknowledged) is cut off.
func (st *staging) load() error {
	b, err := io.ReadAll(st.index)
	if err != nil {
		return err
	}
	off := 0
	for off < len(b) {
		n, ext, hole, hashes, ok := st.decode(b[off:])
		if !ok {
			break
		}
		st.apply(ext, hole, hashes)
		off += n
	}
	if off < len(b) {
		if err := st.index.Truncate(int64(off)); err != nil {
			return err
		}
		if err := fdatasync(st.index); err != nil {
			return err
		}
	}
	st.indexOff = int64(off)
	return nil
}

func (st *staging) encode(ext Extent, hole bool, hash [32]byte, hashes [][32]byte) []byte {
	b := make([]byte, 0, recHead+32*len(hashes)+4)
	b = binary.LittleEndian.AppendUint32(b, recMagic)
	kind := uint32(kindData)
	if hole {
		kind = kindHole
	}
	b = binary.LittleEndian.AppendUint32(b, kind)
	b = binary.LittleEndian.AppendUint64(b, uint64(ext.Off))
	b = binary.LittleEndian.AppendUint64(b, uint64(ext.Len))
	b = append(b, hash[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(hashes)))
	for _, h := range hashes {
		b = append(b, h[:]...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func (st *staging) decode(b []byte) (n int, ext Extent, hole bool, hashes [][32]byte, ok bool) {
	if len(b) < recHead+4 || binary.LittleEndian.Uint32(b) != recMagic {
		return 0, ext, false, nil, false
	}
	nb := int(binary.LittleEndian.Uint32(b[recHead-4:]))
	n = recHead + 32*nb + 4
	if nb > int(st.r.nblocks) || len(b) < n {
		return 0, ext, false, nil, false
	}
	if crc32.Checksum(b[:n-4], castagnoli) != binary.LittleEndian.Uint32(b[n-4:]) {
		return 0, ext, false, nil, false
	}
	kind := binary.LittleEndian.Uint32(b[4:])
	ext = Extent{Off: int64(binary.LittleEndian.Uint64(b[8:])), Len: int64(binary.LittleEndian.Uint64(b[16:]))}
	if st.r.checkExtent(ext, kind == kindHole) != nil {
		return 0, ext, false, nil, false
	}
	hole = kind == kindHole
	if !hole && int64(nb) != st.r.blocksIn(ext) {
		return 0, ext, false, nil, false
	}
	for i := 0; i < nb; i++ {
		var h [32]byte
		copy(h[:], b[recHead+32*i:])
		hashes = append(hashes, h)
	}
	return n, ext, hole, hashes, true
}

// apply records a durable extent in the in-memory maps. st.mu is held or
// the staging is not shared yet.
func (st *staging) apply(ext Extent, hole bool, hashes [][32]byte) {
	st.recs = append(st.recs, ext)
	first := ext.Off / st.r.blockSize
	for i := range st.r.blocksIn(ext) {
		blk := first + i
		if hole {
			st.blocks[blk] = stagedBlock{hole: true, hash: st.r.zeroHashOf(blk)}
			st.holes += st.r.blockLen(blk)
		} else {
			st.blocks[blk] = stagedBlock{hash: hashes[i]}
			st.dataLen += st.r.blockLen(blk)
		}
	}
}

// journal appends a record once its data is written, sharing one fdatasync
// of the data and one of the index among all writers waiting at the moment
// (group commit), and returns when the record is durable.
func (st *staging) journal(req *journalReq) error {
	req.done = make(chan error, 1)
	st.mu.Lock()
	if st.failed != nil {
		st.mu.Unlock()
		return st.failed
	}
	st.queue = append(st.queue, req)
	st.mu.Unlock()

	st.flushMu.Lock()
	defer st.flushMu.Unlock()
	select {
	case err := <-req.done: // a group commit that ran while we waited took ours
		return err
	default:
	}
	st.mu.Lock()
	batch := st.queue
	st.queue = nil
	failed := st.failed
	st.mu.Unlock()
	err := failed
	if err == nil {
		err = st.flush(batch)
	}
	for _, q := range batch {
		q.done <- err
	}
	return <-req.done
}

func (st *staging) flush(batch []*journalReq) error {
	anyData := false
	var buf []byte
	for _, q := range batch {
		anyData = anyData || q.data
		buf = append(buf, q.rec...)
	}
	if anyData {
		if err := fdatasync(st.data.File); err != nil {
			return err
		}
	}
	if _, err := st.index.WriteAt(buf, st.indexOff); err != nil {
		st.fail(err)
		return err
	}
	if err := fdatasync(st.index); err != nil {
		st.fail(err)
		return err
	}
	st.mu.Lock()
	st.indexOff += int64(len(buf))
	for _, q := range batch {
		st.apply(q.ext, q.hole, q.hashes)
	}
	st.mu.Unlock()
	return nil
}

// fail makes every later write fail: the index may now end in a torn record,
// which only a reopen cuts off safely.
func (st *staging) fail(err error) {
	st.mu.Lock()
	if st.failed == nil {
		st.failed = fmt.Errorf("the staging index could not be appended (%w): close and reopen the replica to resume the point", err)
	}
	st.mu.Unlock()
}

// sortedBlocks lists the staged blocks in disk order.
func (st *staging) sortedBlocks() []int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]int64, 0, len(st.blocks))
	for b := range st.blocks {
		out = append(out, b)
	}
	slices.Sort(out)
	return out
}

// extents lists the staged extents, merged and in disk order.
func (st *staging) extents() []Extent {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]Extent, 0, len(st.blocks))
	keys := make([]int64, 0, len(st.blocks))
	for b := range st.blocks {
		keys = append(keys, b)
	}
	slices.Sort(keys)
	for _, b := range keys {
		off, n := b*st.r.blockSize, st.r.blockLen(b)
		if k := len(out) - 1; k >= 0 && out[k].Off+out[k].Len == off {
			out[k].Len += n
			continue
		}
		out = append(out, Extent{Off: off, Len: n})
	}
	return out
}

// replay writes every staged block into dst (the base). Writing a block twice
// is harmless, so recovery replays all of them.
func (st *staging) replay(dst *file) error {
	buf := getAligned(int(st.r.blockSize))
	defer putAligned(buf)
	for _, blk := range st.sortedBlocks() {
		if err := st.copyBlock(dst, blk, buf.b); err != nil {
			return err
		}
	}
	return nil
}

func (st *staging) copyBlock(dst *file, blk int64, buf []byte) error {
	off, n := blk*st.r.blockSize, st.r.blockLen(blk)
	st.mu.Lock()
	sb := st.blocks[blk]
	st.mu.Unlock()
	if sb.hole {
		return punchHole(dst.File, off, n)
	}
	if st.direct {
		return nil // already in the base
	}
	if _, err := st.data.ReadAt(buf[:n], off); err != nil {
		return fmt.Errorf("read staged block %d: %w", blk, err)
	}
	return dst.writeAt(buf[:n], off)
}
