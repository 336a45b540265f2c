package ship

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

// Replica is what the receiver needs of one disk's replica; *replica.Replica
// is one. Begin returns the point being staged if there is one (in this
// process, or left staged on disk by an earlier one), else starts the next.
type Replica interface {
	Size() int64
	BlockSize() int64
	Points() []replica.Point
	Begin(ctx context.Context) (*replica.Txn, error)
	Close() error
}

// OpenFunc opens the replica in dir, or creates it for a disk of size bytes
// in blocks of blockSize (0: the default) when dir is missing or empty and
// size is not 0. It reports whether it created it.
type OpenFunc func(dir string, size, blockSize int64) (r Replica, created bool, err error)

// Receiver accepts shipped points into the replicas under Root, one
// directory per disk, named by the path of the sender's URL (Root/vm/disk).
type Receiver struct {
	// Root holds the replicas.
	Root string
	// TLS, when set, is the TLS 1.3 configuration (see ServerTLS); nil is
	// the plain mode, for loopback.
	TLS *tls.Config
	// Log receives what an operator wants to know: streams, points, errors.
	Log *slog.Logger
	// Clock stamps points that carry no time. Default clock.Real.
	Clock clock.Clock
	// Open opens or creates a replica. Default: replica.Open and replica.Create.
	Open OpenFunc

	mu    sync.Mutex
	disks map[string]*disk
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	dec   *zstd.Decoder

	stats receiverStats
}

type receiverStats struct {
	extents, refused, resent atomic.Int64
}

// ReceiverStats are figures since the receiver started.
type ReceiverStats struct {
	Extents int64 `json:"extents"` // extents staged
	Refused int64 `json:"refused"` // extents refused as damaged
	Resent  int64 `json:"resent"`  // extents that arrived although staged already
}

// Stats returns the receiver's figures so far.
func (rc *Receiver) Stats() ReceiverStats {
	return ReceiverStats{Extents: rc.stats.extents.Load(), Refused: rc.stats.refused.Load(), Resent: rc.stats.resent.Load()}
}

// disk is one open replica and the point being staged in it.
type disk struct {
	path string
	r    Replica

	mu      sync.Mutex
	txn     *replica.Txn
	seen    map[int64]bool           // offsets staged in this process for txn (for Stats.Resent)
	writing map[uint64]chan struct{} // extents being staged now
	nextW   uint64

	commitMu sync.Mutex
}

// Serve accepts connections on ln until ctx is done, then closes them,
// waits for the extents being staged, and closes the replicas: a point
// being staged stays staged on disk, for the sender to resume.
func (rc *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	if rc.Log == nil {
		rc.Log = slog.New(slog.DiscardHandler)
	}
	if rc.Clock == nil {
		rc.Clock = clock.Real{}
	}
	if rc.Open == nil {
		rc.Open = rc.openReplica
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(maxChunk), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return fmt.Errorf("ship: receiver: %w", err)
	}
	defer dec.Close()
	rc.mu.Lock()
	rc.dec = dec
	rc.disks = map[string]*disk{}
	rc.conns = map[net.Conn]struct{}{}
	rc.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var acceptErr error
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("ship: receiver: accept on %s: %w", ln.Addr(), err)
			}
			break
		}
		rc.mu.Lock()
		rc.conns[nc] = struct{}{}
		rc.mu.Unlock()
		rc.wg.Add(1)
		go func() {
			defer rc.wg.Done()
			rc.serveConn(ctx, nc)
			rc.mu.Lock()
			delete(rc.conns, nc)
			rc.mu.Unlock()
		}()
	}
	rc.mu.Lock()
	for nc := range rc.conns {
		nc.Close()
	}
	rc.mu.Unlock()
	rc.wg.Wait()
	var errs []error
	if acceptErr != nil {
		errs = append(errs, acceptErr)
	}
	rc.mu.Lock()
	for _, d := range rc.disks {
		if err := d.r.Close(); err != nil {
			errs = append(errs, fmt.Errorf("ship: receiver: close replica %s: %w", d.path, err))
		}
	}
	rc.disks = map[string]*disk{}
	rc.mu.Unlock()
	return errors.Join(errs...)
}

func (rc *Receiver) openReplica(dir string, size, blockSize int64) (Replica, bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(ents) == 0) {
		if size <= 0 {
			return nil, false, errors.New("there is no replica here yet, and the sender did not give the disk size to create one")
		}
		r, err := replica.Create(dir, size, replica.Options{BlockSize: blockSize, Clock: rc.Clock})
		if err != nil {
			return nil, false, err
		}
		return r, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	r, err := replica.Open(dir, replica.Options{Clock: rc.Clock})
	if err != nil {
		return nil, false, err
	}
	return r, false, nil
}

// disk opens (once) the replica named p.
func (rc *Receiver) disk(p string, h hello) (*disk, bool, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if d, ok := rc.disks[p]; ok {
		return d, false, nil
	}
	r, created, err := rc.Open(filepath.Join(rc.Root, filepath.FromSlash(p)), h.Size, h.BlockSize)
	if err != nil {
		return nil, false, err
	}
	if created {
		rc.Log.Info("replica created", "replica", p, "size", r.Size(), "blockSize", r.BlockSize())
	}
	d := &disk{path: p, r: r, writing: map[uint64]chan struct{}{}}
	rc.disks[p] = d
	return d, created, nil
}

func (d *disk) info(created bool) *Info {
	info := &Info{Name: d.path, Size: d.r.Size(), BlockSize: d.r.BlockSize(), Created: created}
	if ps := d.r.Points(); len(ps) > 0 {
		info.Newest = ps[len(ps)-1]
	}
	return info
}

func (d *disk) newest() uint64 {
	ps := d.r.Points()
	if len(ps) == 0 {
		return 0
	}
	return ps[len(ps)-1].Seq
}

// txnFor returns the point seq being staged: the one open in this process,
// or the one left staged on disk by an earlier receiver, or a new one when
// seq is the next point.
func (d *disk) txnFor(ctx context.Context, seq uint64) (*replica.Txn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.txn != nil && d.txn.Seq() == seq {
		return d.txn, nil
	}
	if n := d.newest(); seq != n+1 {
		return nil, &RemoteError{Code: codeGone, Message: fmt.Sprintf("point %d of %s is not being staged (the newest point is %d): start the sync again", seq, d.path, n)}
	}
	t, err := d.r.Begin(ctx)
	if err != nil {
		return nil, &RemoteError{Code: codeFailed, Message: err.Error()}
	}
	if t.Seq() != seq {
		return nil, &RemoteError{Code: codeGone, Message: fmt.Sprintf("point %d of %s is not being staged (point %d is): start the sync again", seq, d.path, t.Seq())}
	}
	d.setTxn(t)
	return t, nil
}

// setTxn makes t the point being staged. d.mu is held.
func (d *disk) setTxn(t *replica.Txn) {
	if d.txn != t {
		d.txn, d.seen = t, map[int64]bool{}
	}
}

// startWrite registers an extent being staged, so that a sender asking
// what is staged after losing a connection waits for it.
func (d *disk) startWrite() (uint64, chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nextW++
	ch := make(chan struct{})
	d.writing[d.nextW] = ch
	return d.nextW, ch
}

func (d *disk) endWrite(id uint64, ch chan struct{}) {
	d.mu.Lock()
	delete(d.writing, id)
	d.mu.Unlock()
	close(ch)
}

// settle waits for the extents being staged at the moment.
func (d *disk) settle(ctx context.Context) error {
	d.mu.Lock()
	var chs []chan struct{}
	for _, ch := range d.writing {
		chs = append(chs, ch)
	}
	d.mu.Unlock()
	for _, ch := range chs {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// rconn is one connection at the receiver.
type rconn struct {
	rc   *Receiver
	nc   net.Conn
	d    *disk
	wmu  sync.Mutex
	bw   *bufio.Writer
	log  *slog.Logger
	slot chan []byte // extent buffers: at most two extents per stream in memory
	wg   sync.WaitGroup
}

func (c *rconn) reply(id uint32, r *reply) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(deadline(time.Minute))
	if err := writeJSON(c.bw, frameReply, id, r); err == nil {
		err = c.bw.Flush()
	}
	// A reply that cannot be written means the connection is gone; the
	// sender asks what is staged when it comes back.
}

func errReply(err error) *reply {
	var re *RemoteError
	if errors.As(err, &re) {
		return &reply{Code: re.Code, Error: re.Message}
	}
	if errors.Is(err, replica.ErrTxnDone) {
		return &reply{Code: codeGone, Error: err.Error()}
	}
	return &reply{Code: codeFailed, Error: err.Error()}
}

func (rc *Receiver) serveConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	log := rc.Log.With("remote", nc.RemoteAddr().String())
	_ = nc.SetDeadline(deadline(30 * time.Second))
	if rc.TLS != nil {
		tc := tls.Server(nc, rc.TLS)
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			level := slog.LevelWarn
			if errors.Is(err, io.EOF) {
				level = slog.LevelDebug // a probe of the port, not a sender
			}
			log.Log(ctx, level, "TLS handshake failed", "err", err)
			return
		}
		nc = tc
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	c := &rconn{rc: rc, nc: nc, bw: bufio.NewWriterSize(nc, 16<<10), log: log, slot: make(chan []byte, 2)}
	c.slot <- nil
	c.slot <- nil
	var m [len(magic)]byte
	if _, err := io.ReadFull(br, m[:]); err != nil || string(m[:]) != magic {
		log.Warn("connection refused: not a standby sender")
		return
	}
	var buf []byte
	typ, id, p, err := readFrame(br, &buf)
	if err != nil || typ != frameHello {
		log.Warn("connection refused: no hello", "err", err)
		return
	}
	var h hello
	if err := json.Unmarshal(p, &h); err != nil {
		c.reply(id, &reply{Code: codeBad, Error: "hello: " + err.Error()})
		return
	}
	if h.Version != wireVersion {
		c.reply(id, &reply{Code: codeBad, Error: fmt.Sprintf("wire version %d, this receiver speaks %d: run the same standby version at both ends", h.Version, wireVersion)})
		return
	}
	path, err := CleanPath(h.Path)
	if err != nil {
		c.reply(id, &reply{Code: codeBad, Error: err.Error()})
		return
	}
	d, created, err := rc.disk(path, h)
	if err != nil {
		log.Warn("replica unavailable", "replica", path, "err", err)
		c.reply(id, &reply{Code: codeFailed, Error: fmt.Sprintf("replica %s: %v", path, err)})
		return
	}
	if h.Size != 0 && h.Size != d.r.Size() {
		c.reply(id, &reply{Code: codeBad, Error: fmt.Sprintf("replica %s holds a disk of %d bytes, the source has %d: replicate to a new path, or resize the source back", path, d.r.Size(), h.Size)})
		return
	}
	c.d, c.log = d, log.With("replica", path)
	c.reply(id, &reply{Info: d.info(created)})
	_ = nc.SetDeadline(time.Time{})
	c.log.Debug("stream opened")

	err = c.loop(ctx, br)
	c.wg.Wait()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
		c.log.Warn("stream closed", "err", err)
	}
}

func (c *rconn) loop(ctx context.Context, br *bufio.Reader) error {
	var buf []byte
	for {
		typ, id, p, err := readFrame(br, &buf)
		if err != nil {
			return err
		}
		switch typ {
		case frameRequest:
			var q request
			if err := json.Unmarshal(p, &q); err != nil {
				return fmt.Errorf("%w: request: %v", errProtocol, err)
			}
			c.reply(id, c.request(ctx, q))
		case frameExtent:
			h, err := parseExtentHead(p)
			if err != nil {
				return fmt.Errorf("%w: %v", errProtocol, err)
			}
			if err := c.extent(ctx, br, id, h); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unexpected frame type %d", errProtocol, typ)
		}
	}
}

func (c *rconn) request(ctx context.Context, q request) *reply {
	d := c.d
	switch q.Op {
	case "info":
		return &reply{Info: d.info(false)}
	case "begin":
		d.mu.Lock()
		t, err := d.r.Begin(ctx)
		if err == nil {
			d.setTxn(t)
		}
		d.mu.Unlock()
		if err != nil {
			return errReply(err)
		}
		c.log.Info("point begun", "seq", t.Seq(), "staged", len(t.Staged()))
		return &reply{Seq: t.Seq(), Staged: t.Staged()}
	case "staged":
		t, err := d.txnFor(ctx, q.Seq)
		if err != nil {
			return errReply(err)
		}
		if err := d.settle(ctx); err != nil {
			return errReply(err)
		}
		return &reply{Seq: t.Seq(), Staged: t.Staged()}
	case "commit":
		return c.commit(ctx, q)
	case "abort":
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.txn == nil || d.txn.Seq() != q.Seq {
			return &reply{Seq: q.Seq} // nothing of it is staged in this process
		}
		err := d.txn.Abort()
		d.txn = nil
		if err != nil {
			return errReply(err)
		}
		c.log.Info("point aborted", "seq", q.Seq)
		return &reply{Seq: q.Seq}
	}
	return &reply{Code: codeBad, Error: fmt.Sprintf("unknown request %q", q.Op)}
}

func (c *rconn) commit(ctx context.Context, q request) *reply {
	d := c.d
	d.commitMu.Lock()
	defer d.commitMu.Unlock()
	for _, p := range d.r.Points() {
		if p.Seq == q.Seq {
			return &reply{Seq: p.Seq, Point: &p} // committed already: the reply was lost
		}
	}
	if len(q.Hashes)%32 != 0 {
		return &reply{Code: codeBad, Error: "commit: block hashes are not a whole number of 32-byte hashes"}
	}
	meta := replica.PointMeta{Time: q.Time, Kind: q.Kind}
	if len(q.Hashes) > 0 {
		meta.BlockHashes = make([][32]byte, len(q.Hashes)/32)
		for i := range meta.BlockHashes {
			copy(meta.BlockHashes[i][:], q.Hashes[32*i:])
		}
	}
	t, err := d.txnFor(ctx, q.Seq)
	if err != nil {
		return errReply(err)
	}
	if err := d.settle(ctx); err != nil {
		return errReply(err)
	}
	p, err := t.Commit(ctx, meta)
	if err != nil {
		c.log.Warn("commit failed", "seq", q.Seq, "err", err)
		return errReply(err)
	}
	d.mu.Lock()
	if d.txn == t {
		d.txn, d.seen = nil, nil
	}
	d.mu.Unlock()
	c.log.Info("point committed", "seq", p.Seq, "bytes", p.Bytes, "kind", p.Kind)
	return &reply{Seq: p.Seq, Point: &p}
}

// extent reads one extent's chunks and hands it to a goroutine that checks
// and stages it; the reply goes out when it is durable.
func (c *rconn) extent(ctx context.Context, br *bufio.Reader, id uint32, h extentHead) error {
	buf := <-c.slot // waits while two extents of this stream are being staged
	release := func() { c.slot <- buf }
	if h.Hole {
		wid, ch := c.d.startWrite()
		c.wg.Add(1)
		go c.stage(ctx, id, h, nil, release, wid, ch)
		return nil
	}
	if int64(cap(buf)) < h.Len {
		buf = make([]byte, h.Len)
	}
	data := buf[:h.Len]
	bad := ""
	var cbuf []byte
	for n := int64(0); n < h.Len; {
		typ, cid, p, err := readFrame(br, &cbuf)
		if err != nil {
			release()
			return err
		}
		if typ != frameChunk || cid != id || len(p) < chunkHeadLen {
			release()
			return fmt.Errorf("%w: extent %d: expected a chunk", errProtocol, id)
		}
		enc, raw := p[0], int64(uint32(p[1])|uint32(p[2])<<8|uint32(p[3])<<16|uint32(p[4])<<24)
		body := p[chunkHeadLen:]
		if raw <= 0 || raw > maxChunk || n+raw > h.Len {
			release()
			return fmt.Errorf("%w: extent %d: chunk of %d bytes past its end", errProtocol, id, raw)
		}
		dst := data[n : n+raw]
		switch enc {
		case encRaw:
			if int64(len(body)) != raw {
				bad = "a raw chunk of the wrong length"
			}
			copy(dst, body)
		case encZstd:
			out, err := c.rc.dec.DecodeAll(body, dst[:0:raw])
			if err != nil || int64(len(out)) != raw || (raw > 0 && &out[0] != &dst[0]) {
				bad = fmt.Sprintf("a chunk that does not decompress (%v)", err)
			}
		default:
			release()
			return fmt.Errorf("%w: extent %d: chunk encoding %d", errProtocol, id, enc)
		}
		n += raw
	}
	if bad != "" {
		c.rc.stats.refused.Add(1)
		c.log.Warn("extent refused", "off", h.Off, "why", bad)
		c.reply(id, &reply{Code: codeCorrupt, Error: fmt.Sprintf("extent at %d+%d: %s: send it again", h.Off, h.Len, bad)})
		release()
		return nil
	}
	wid, ch := c.d.startWrite()
	c.wg.Add(1)
	go c.stage(ctx, id, h, data, release, wid, ch)
	return nil
}

// stage checks and stages one extent. The extent was registered as being
// written (wid, ch) by the reader as soon as it was read whole, so that a
// sender that lost this connection and asks what is staged waits for it.
func (c *rconn) stage(ctx context.Context, id uint32, h extentHead, data []byte, release func(), wid uint64, ch chan struct{}) {
	defer c.wg.Done()
	defer release()
	d := c.d
	defer d.endWrite(wid, ch)
	if data != nil && blake3.Sum256(data) != h.Hash {
		c.rc.stats.refused.Add(1)
		c.log.Warn("extent refused", "off", h.Off, "why", "BLAKE3 mismatch")
		c.reply(id, &reply{Code: codeCorrupt, Error: fmt.Sprintf("extent at %d+%d: BLAKE3 mismatch, damaged on the way: send it again", h.Off, h.Len)})
		return
	}
	t, err := d.txnFor(ctx, h.Seq)
	if err != nil {
		c.reply(id, errReply(err))
		return
	}
	if data != nil {
		err = t.WriteExtent(ctx, h.Off, data, h.Hash)
	} else {
		err = t.WriteHole(ctx, h.Off, h.Len)
	}
	if err != nil {
		c.log.Warn("extent not staged", "off", h.Off, "err", err)
		c.reply(id, errReply(err))
		return
	}
	c.rc.stats.extents.Add(1)
	d.mu.Lock()
	if d.txn == t && d.seen != nil {
		if d.seen[h.Off] {
			c.rc.stats.resent.Add(1)
		}
		d.seen[h.Off] = true
	}
	d.mu.Unlock()
	c.reply(id, &reply{})
}
