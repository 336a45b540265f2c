package ship

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

// The wire format. A connection starts with the 8-byte magic and a hello
// frame from the sender; the receiver answers with a reply frame (the
// replica's Info, or an error, after which it closes). Then the sender sends
// request frames (JSON control: begin, staged, commit, abort, info) and
// extents, each an extent frame followed, for data, by chunk frames with the
// same id until the extent's length is covered. The receiver answers every
// request and every extent with one reply frame of the same id, in any
// order. All integers are little endian.
//
//	frame  = type:u8 0:u8 0:u16 id:u32 len:u32 payload[len]
//	extent = seq:u64 off:u64 len:u64 blake3:[32] flags:u8 (1: a hole)
//	chunk  = encoding:u8 (0 raw, 1 zstd) rawLen:u32 bytes
const (
	magic        = "STBYSHP1"
	wireVersion  = 1
	frameHeadLen = 12
	extentLen    = 8 + 8 + 8 + 32 + 1
	chunkHeadLen = 5

	frameHello   byte = 1
	frameRequest byte = 2
	frameExtent  byte = 3
	frameChunk   byte = 4
	frameReply   byte = 5

	encRaw  byte = 0
	encZstd byte = 1

	// chunkSize is the piece of an extent compressed and sent at once: small
	// enough that a sender holds little beyond the extent itself, large
	// enough for zstd to find what repeats.
	chunkSize = 256 << 10
	// maxChunk bounds what a receiver decodes from one chunk.
	maxChunk = 1 << 20
	// maxControl bounds a control frame (a commit carries the hashes of
	// every block of the disk: 8 MiB for 1 TiB in 4 MiB blocks, as base64).
	maxControl = 64 << 20
	// maxExtent bounds an extent's length.
	maxExtent = 64 << 20
)

// Reply codes tell the sender what to do about a failed request.
const (
	codeCorrupt = "corrupt" // the extent arrived damaged: send it again
	codeGone    = "gone"    // the point is no longer being staged
	codeBad     = "bad"     // the request is wrong for this replica
	codeFailed  = "failed"  // the receiver could not do it (I/O, a full disk)
)

type hello struct {
	Version int    `json:"version"`
	Path    string `json:"path"`
	// Size and BlockSize create the replica when there is none yet; Size,
	// when set, must match an existing replica.
	Size      int64 `json:"size,omitempty"`
	BlockSize int64 `json:"blockSize,omitempty"`
}

type request struct {
	Op     string    `json:"op"` // info, begin, staged, commit, abort
	Seq    uint64    `json:"seq,omitempty"`
	Time   time.Time `json:"time,omitzero"`
	Kind   string    `json:"kind,omitempty"`
	Hashes []byte    `json:"hashes,omitempty"` // 32 bytes per block
}

type reply struct {
	Code   string           `json:"code,omitempty"`
	Error  string           `json:"error,omitempty"`
	Info   *Info            `json:"info,omitempty"`
	Seq    uint64           `json:"seq,omitempty"`
	Staged []replica.Extent `json:"staged,omitempty"`
	Point  *replica.Point   `json:"point,omitempty"`
}

// RemoteError is an error the receiver reported.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return "the receiver says: " + e.Message }

func (r *reply) err() error {
	if r.Code == "" {
		return nil
	}
	return &RemoteError{Code: r.Code, Message: r.Error}
}

type extentHead struct {
	Seq  uint64
	Off  int64
	Len  int64
	Hash [32]byte
	Hole bool
}

func (h extentHead) marshal() []byte {
	b := make([]byte, 0, extentLen)
	b = binary.LittleEndian.AppendUint64(b, h.Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Off))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Len))
	b = append(b, h.Hash[:]...)
	flags := byte(0)
	if h.Hole {
		flags = 1
	}
	return append(b, flags)
}

func parseExtentHead(b []byte) (extentHead, error) {
	if len(b) != extentLen {
		return extentHead{}, fmt.Errorf("extent header of %d bytes, want %d", len(b), extentLen)
	}
	h := extentHead{
		Seq: binary.LittleEndian.Uint64(b),
		Off: int64(binary.LittleEndian.Uint64(b[8:])),
		Len: int64(binary.LittleEndian.Uint64(b[16:])),
	}
	copy(h.Hash[:], b[24:56])
	h.Hole = b[56]&1 != 0
	if h.Off < 0 || h.Len <= 0 || (!h.Hole && h.Len > maxExtent) {
		return extentHead{}, fmt.Errorf("extent at %d+%d is out of bounds", h.Off, h.Len)
	}
	return h, nil
}

// writeFrame writes one frame; the payload may come in parts.
func writeFrame(w io.Writer, typ byte, id uint32, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var head [frameHeadLen]byte
	head[0] = typ
	binary.LittleEndian.PutUint32(head[4:], id)
	binary.LittleEndian.PutUint32(head[8:], uint32(n))
	if _, err := w.Write(head[:]); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(w io.Writer, typ byte, id uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFrame(w, typ, id, b)
}

// readFrame reads one frame into buf (grown when too small) and returns
// its payload, which stays valid until the next call with the same buf.
func readFrame(r io.Reader, buf *[]byte) (typ byte, id uint32, payload []byte, err error) {
	var head [frameHeadLen]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, 0, nil, err
	}
	typ = head[0]
	id = binary.LittleEndian.Uint32(head[4:])
	n := int(binary.LittleEndian.Uint32(head[8:]))
	limit := maxControl
	if typ == frameChunk {
		limit = chunkHeadLen + maxChunk + maxChunk/64 + 64
	}
	if n > limit {
		return 0, 0, nil, fmt.Errorf("frame of %d bytes, more than the %d allowed: not a standby sender or receiver", n, limit)
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	payload = (*buf)[:n]
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, 0, nil, err
	}
	return typ, id, payload, nil
}

var errProtocol = errors.New("protocol violation")

// deadline is a socket deadline d from now. Socket deadlines are real
// time whatever clock drives the rest, so this reads the real clock.
func deadline(d time.Duration) time.Time { return clock.Real{}.Now().Add(d) }
