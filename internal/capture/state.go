package capture

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/zeebo/blake3"
)

// The state file keeps, at the source, the block hashes of the last point
// the replica committed, so the next scan ships only blocks that differ.
//
//	magic "STBYSCAN" | version u32 | block size u64 | disk size u64 |
//	point seq u64 | point time (unix ns) i64 | target length u32 | target |
//	block count u64 | count x 32-byte BLAKE3 | BLAKE3 of all the above
//
// Integers are little-endian. The file is replaced atomically (write a
// temporary file, fsync, rename, fsync the directory).
const (
	stateMagic   = "STBYSCAN"
	stateVersion = 1
)

// state is the decoded state file.
type state struct {
	BlockSize int64
	Size      int64
	Seq       uint64
	Time      time.Time
	Target    string
	Hashes    [][32]byte
}

// statePath names the state file of source for target inside dir. The
// target is part of the name so one source can replicate to several
// replicas, each with its own state.
func statePath(dir, source, target string) string {
	sum := blake3.Sum256([]byte(target))
	return filepath.Join(dir, "."+filepath.Base(source)+".standby-scan-"+hex.EncodeToString(sum[:6]))
}

func (s *state) encode() []byte {
	var b bytes.Buffer
	b.Grow(64 + len(s.Target) + 32*len(s.Hashes) + 32)
	b.WriteString(stateMagic)
	le := binary.LittleEndian
	var w [8]byte
	le.PutUint32(w[:4], stateVersion)
	b.Write(w[:4])
	for _, v := range []uint64{uint64(s.BlockSize), uint64(s.Size), s.Seq, uint64(s.Time.UnixNano())} {
		le.PutUint64(w[:], v)
		b.Write(w[:])
	}
	le.PutUint32(w[:4], uint32(len(s.Target)))
	b.Write(w[:4])
	b.WriteString(s.Target)
	le.PutUint64(w[:], uint64(len(s.Hashes)))
	b.Write(w[:])
	for i := range s.Hashes {
		b.Write(s.Hashes[i][:])
	}
	sum := blake3.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

var errStateDamaged = errors.New("damaged")

func decodeState(p []byte) (*state, error) {
	le := binary.LittleEndian
	const fixed = len(stateMagic) + 4 + 4*8 + 4
	if len(p) < fixed+8+32 || string(p[:len(stateMagic)]) != stateMagic {
		return nil, fmt.Errorf("%w: not a scan state file", errStateDamaged)
	}
	q, err := unseal(p, stateMagic, stateVersion)
	if errors.Is(err, errChecksum) {
		return nil, fmt.Errorf("%w: checksum mismatch", errStateDamaged)
	}
	if err != nil {
		return nil, err
	}
	s := &state{
		BlockSize: int64(le.Uint64(q[0:])),
		Size:      int64(le.Uint64(q[8:])),
		Seq:       le.Uint64(q[16:]),
		Time:      time.Unix(0, int64(le.Uint64(q[24:]))),
	}
	q = q[32:]
	tl := int(le.Uint32(q))
	q = q[4:]
	if tl > len(q)-8 {
		return nil, fmt.Errorf("%w: target length %d", errStateDamaged, tl)
	}
	s.Target = string(q[:tl])
	q = q[tl:]
	n := le.Uint64(q)
	q = q[8:]
	if uint64(len(q)) != n*32 {
		return nil, fmt.Errorf("%w: %d block hashes announced, %d bytes hold them", errStateDamaged, n, len(q))
	}
	s.Hashes = make([][32]byte, n)
	for i := range s.Hashes {
		copy(s.Hashes[i][:], q[i*32:])
	}
	return s, nil
}

// readState loads the state file at path. A missing file returns (nil, nil).
func readState(path string) (*state, error) {
	p, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeState(p)
}

// writeState replaces the state file at path atomically and durably.
func writeState(path string, s *state) error { return replaceFile(path, s.encode()) }

var errChecksum = errors.New("checksum mismatch")

// unseal checks a file that ends in the BLAKE3 of everything before it and
// starts with magic and a little-endian u32 format version, and returns
// what lies between the version and the checksum. The caller has checked
// the magic and the length.
func unseal(p []byte, magic string, version uint32) ([]byte, error) {
	body, sum := p[:len(p)-32], p[len(p)-32:]
	if got := blake3.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, errChecksum
	}
	q := body[len(magic):]
	if v := binary.LittleEndian.Uint32(q); v != version {
		return nil, fmt.Errorf("format version %d, this build reads version %d", v, version)
	}
	return q[4:], nil
}
