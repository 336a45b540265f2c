package replica

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/zeebo/blake3"
)

// The two small binary files of the format: the block hashes of a point and
// the block list of an undo file. Both end with the BLAKE3 of what precedes,
// so damage is found before the content is trusted.

const (
	hashesMagic = "SBHASHES"
	undoMagic   = "SBUNDOIX"
	headerLen   = 8 + 4 + 4 + 8 + 8 + 8 // magic, version, reserved, three u64
)

func hashesPath(dir string, seq uint64) string {
	return filepath.Join(dir, pointsDir, fmt.Sprintf("%d.hashes", seq))
}

func undoDataPath(dir string, seq uint64) string {
	return filepath.Join(dir, undoDir, fmt.Sprintf("%d.data", seq))
}

func undoIndexPath(dir string, seq, gen uint64) string {
	return filepath.Join(dir, undoDir, fmt.Sprintf("%d-%d.index", seq, gen))
}

func putHeader(b []byte, magic string, a, c, d uint64) []byte {
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, FormatVersion)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint64(b, a)
	b = binary.LittleEndian.AppendUint64(b, c)
	b = binary.LittleEndian.AppendUint64(b, d)
	return b
}

func seal(b []byte) []byte {
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

// open checks magic, version and checksum and returns the three header
// values and the body.
func unseal(name string, b []byte, magic string) (a, c, d uint64, body []byte, err error) {
	if len(b) < headerLen+32 || string(b[:8]) != magic {
		return 0, 0, 0, nil, fmt.Errorf("%s is truncated or not a replica file", name)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v > FormatVersion {
		return 0, 0, 0, nil, fmt.Errorf("%s is format version %d, newer than this standby reads (%d): upgrade standby", name, v, FormatVersion)
	}
	n := len(b) - 32
	if sum := blake3.Sum256(b[:n]); string(sum[:]) != string(b[n:]) {
		return 0, 0, 0, nil, fmt.Errorf("%s is damaged (checksum mismatch)", name)
	}
	a = binary.LittleEndian.Uint64(b[16:])
	c = binary.LittleEndian.Uint64(b[24:])
	d = binary.LittleEndian.Uint64(b[32:])
	return a, c, d, b[headerLen:n], nil
}

func encodeHashes(seq uint64, size, blockSize int64, hashes [][32]byte) []byte {
	b := make([]byte, 0, headerLen+8+32*len(hashes)+32)
	b = putHeader(b, hashesMagic, seq, uint64(size), uint64(blockSize))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(hashes)))
	for _, h := range hashes {
		b = append(b, h[:]...)
	}
	return seal(b)
}

func readHashes(path string, seq uint64, size, blockSize int64) ([][32]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, sz, bs, body, err := unseal(path, b, hashesMagic)
	if err != nil {
		return nil, err
	}
	n := (size + blockSize - 1) / blockSize
	if s != seq || int64(sz) != size || int64(bs) != blockSize || len(body) < 8 ||
		binary.LittleEndian.Uint64(body) != uint64(n) || int64(len(body)-8) != 32*n {
		return nil, fmt.Errorf("%s does not belong to point %d of this replica", path, seq)
	}
	hashes := make([][32]byte, n)
	for i := range hashes {
		copy(hashes[i][:], body[8+32*i:])
	}
	return hashes, nil
}

func encodeUndoIndex(seq, gen uint64, blocks map[int64]bool) []byte {
	keys := make([]int64, 0, len(blocks))
	for k := range blocks {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := make([]byte, 0, headerLen+8*len(keys)+32)
	b = putHeader(b, undoMagic, seq, gen, uint64(len(keys)))
	for _, k := range keys {
		v := uint64(k) << 1
		if blocks[k] {
			v |= 1
		}
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return seal(b)
}

func readUndoIndex(path string, seq, gen uint64, nblocks int64) (map[int64]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, g, n, body, err := unseal(path, b, undoMagic)
	if err != nil {
		return nil, err
	}
	if s != seq || g != gen || uint64(len(body)) != 8*n {
		return nil, fmt.Errorf("%s does not belong to point %d generation %d", path, seq, gen)
	}
	blocks := make(map[int64]bool, n)
	for i := uint64(0); i < n; i++ {
		v := binary.LittleEndian.Uint64(body[8*i:])
		blk := int64(v >> 1)
		if blk >= nblocks {
			return nil, fmt.Errorf("%s is damaged: block %d beyond the disk", path, blk)
		}
		blocks[blk] = v&1 == 1
	}
	return blocks, nil
}
