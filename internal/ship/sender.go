package ship

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

// Stream bounds and default (Site Recovery's UploadThreadsPerVM).
const (
	DefaultStreams = 4
	MaxStreams     = 32
)

// Options tune a Client. Zero values take the defaults.
type Options struct {
	// Streams is the number of parallel connections, 1-32 (default 4).
	Streams int
	// TLS is the client configuration for https:// (see ClientTLS).
	TLS *tls.Config
	// Limiter caps the bandwidth; share one among the disks of a VM.
	Limiter *Limiter
	// Size and BlockSize create the replica at the receiver when it has
	// none yet; Size, when set, must match an existing one.
	Size, BlockSize int64
	// RetryFor is how long a broken stream keeps redialling the receiver
	// before the sync fails (default 2 minutes).
	RetryFor time.Duration
	// IOTimeout bounds a write and the wait for an extent's acknowledgement
	// (default 2 minutes).
	IOTimeout time.Duration
	// Clock measures the retries. Default clock.Real.
	Clock clock.Clock

	// tamper, in tests, may change a chunk's bytes on their way out.
	tamper func(off int64, attempt int, chunk []byte)
	// dial, in tests, replaces the TCP dialer.
	dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Info describes a replica at the receiver.
type Info struct {
	// Name is the replica's path at the receiver (vm/disk).
	Name      string        `json:"name"`
	Size      int64         `json:"size"`
	BlockSize int64         `json:"blockSize"`
	Newest    replica.Point `json:"newest"` // Seq 0 when there is none
	Created   bool          `json:"created"`
}

// Stats are a Client's figures so far.
type Stats struct {
	WireBytes  int64 `json:"wireBytes"`  // bytes written to the network, TLS included
	Extents    int64 `json:"extents"`    // extents and holes acknowledged
	Refused    int64 `json:"refused"`    // extents the receiver refused as damaged, then sent again
	Resent     int64 `json:"resent"`     // extents sent again after a broken connection
	Skipped    int64 `json:"skipped"`    // unacknowledged extents found staged after a broken connection
	Reconnects int64 `json:"reconnects"` // streams redialled
}

// Client ships points to one replica at a receiver over parallel streams.
// Its methods are safe for concurrent use.
type Client struct {
	target  Target
	opts    Options
	enc     *zstd.Encoder
	streams []*stream
	pickMu  sync.Mutex
	info    Info
	closed  atomic.Bool

	wire, extents, refused, resent, skipped, reconnects atomic.Int64
}

// Dial connects to the receiver at rawURL (https://HOST:PORT/VM/DISK, or
// tcp://... in the plain mode) and returns a Client for that replica,
// creating it at the receiver when opts.Size is set and there is none.
// A receiver that cannot be reached now is an error at once; once
// connected, streams that break are redialled for opts.RetryFor.
func Dial(ctx context.Context, rawURL string, opts Options) (*Client, error) {
	t, err := ParseTarget(rawURL)
	if err != nil {
		return nil, err
	}
	if opts.Streams == 0 {
		opts.Streams = DefaultStreams
	}
	if opts.Streams < 1 || opts.Streams > MaxStreams {
		return nil, fmt.Errorf("ship: %d streams: want 1 to %d", opts.Streams, MaxStreams)
	}
	if t.TLS && opts.TLS == nil {
		return nil, fmt.Errorf("ship: %s: https needs a TLS configuration (a client certificate and the receiver's CA)", t)
	}
	if !t.TLS && !IsLoopback(t.Host) {
		return nil, fmt.Errorf("ship: %s: the plain mode is for loopback only: use https:// with a client certificate", t)
	}
	if opts.RetryFor == 0 {
		opts.RetryFor = 2 * time.Minute
	}
	if opts.IOTimeout == 0 {
		opts.IOTimeout = 2 * time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(opts.Streams), zstd.WithWindowSize(chunkSize))
	if err != nil {
		return nil, fmt.Errorf("ship: %w", err)
	}
	c := &Client{target: t, opts: opts, enc: enc}
	for i := range opts.Streams {
		c.streams = append(c.streams, &stream{c: c, idx: i})
	}
	cn, info, err := c.connect(ctx)
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("ship: connect to %s: %w", t, hintFor(err))
	}
	c.streams[0].cur = cn
	c.info = *info
	return c, nil
}

// Target is the receiver URL the client ships to.
func (c *Client) Target() Target { return c.target }

// Info asks the receiver for the replica's state now.
func (c *Client) Info(ctx context.Context) (Info, error) {
	rep, err := c.call(ctx, request{Op: "info"}, c.opts.IOTimeout)
	if err != nil {
		return Info{}, fmt.Errorf("ship: %s: info: %w", c.target, err)
	}
	if rep.Info == nil {
		return Info{}, fmt.Errorf("ship: %s: info: %w: answered without the replica's state", c.target, errProtocol)
	}
	info := *rep.Info
	info.Created = c.info.Created
	return info, nil
}

// Stats returns the figures so far.
func (c *Client) Stats() Stats {
	return Stats{WireBytes: c.wire.Load(), Extents: c.extents.Load(), Refused: c.refused.Load(),
		Resent: c.resent.Load(), Skipped: c.skipped.Load(), Reconnects: c.reconnects.Load()}
}

// Close closes the streams. A point being staged stays staged at the
// receiver.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	for _, s := range c.streams {
		s.mu.Lock()
		if s.cur != nil {
			s.cur.fail(errClosed)
		}
		s.mu.Unlock()
	}
	c.enc.Close()
	return nil
}

var errClosed = errors.New("the client is closed")

// Begin starts the next point at the receiver, or resumes the one it has
// staged: Staged lists what need not be sent.
func (c *Client) Begin(ctx context.Context) (*Txn, error) {
	rep, err := c.call(ctx, request{Op: "begin"}, c.opts.IOTimeout)
	if err != nil {
		return nil, fmt.Errorf("ship: %s: begin a point: %w", c.target, err)
	}
	return &Txn{c: c, seq: rep.Seq, staged: rep.Staged}, nil
}

// Txn is one point being staged at the receiver. WriteExtent and
// WriteHole may be called from many goroutines at once: each call goes out
// on the least busy stream.
type Txn struct {
	c      *Client
	seq    uint64
	staged []replica.Extent
}

// Seq is the number the point gets at commit.
func (t *Txn) Seq() uint64 { return t.seq }

// Staged lists the extents the receiver had staged when the point began.
func (t *Txn) Staged() []replica.Extent { return t.staged }

// WriteExtent ships data for off with its BLAKE3 hash and returns once the
// receiver has checked and durably staged it.
func (t *Txn) WriteExtent(ctx context.Context, off int64, data []byte, hash [32]byte) error {
	if err := t.send(ctx, extentHead{Seq: t.seq, Off: off, Len: int64(len(data)), Hash: hash}, data); err != nil {
		return fmt.Errorf("ship: %s: point %d: extent at %d+%d: %w", t.c.target, t.seq, off, len(data), err)
	}
	return nil
}

// WriteHole ships an all-zero extent.
func (t *Txn) WriteHole(ctx context.Context, off, length int64) error {
	if err := t.send(ctx, extentHead{Seq: t.seq, Off: off, Len: length, Hole: true}, nil); err != nil {
		return fmt.Errorf("ship: %s: point %d: hole at %d+%d: %w", t.c.target, t.seq, off, length, err)
	}
	return nil
}

// Commit commits the point at the receiver with its metadata and block
// hashes, which the receiver checks against what it staged.
func (t *Txn) Commit(ctx context.Context, meta replica.PointMeta) (replica.Point, error) {
	q := request{Op: "commit", Seq: t.seq, Time: meta.Time, Kind: meta.Kind}
	if meta.BlockHashes != nil {
		q.Hashes = make([]byte, 0, 32*len(meta.BlockHashes))
		for _, h := range meta.BlockHashes {
			q.Hashes = append(q.Hashes, h[:]...)
		}
	}
	rep, err := t.c.call(ctx, q, 0)
	if err == nil && rep.Point == nil {
		err = fmt.Errorf("%w: commit answered without a point", errProtocol)
	}
	if err != nil {
		return replica.Point{}, fmt.Errorf("ship: %s: commit point %d: %w", t.c.target, t.seq, err)
	}
	return *rep.Point, nil
}

// Abort drops the staged point at the receiver.
func (t *Txn) Abort() error {
	ctx, cancel := context.WithTimeout(context.Background(), t.c.opts.IOTimeout)
	defer cancel()
	if _, err := t.c.call(ctx, request{Op: "abort", Seq: t.seq}, t.c.opts.IOTimeout); err != nil {
		return fmt.Errorf("ship: %s: abort point %d: %w", t.c.target, t.seq, err)
	}
	return nil
}

// maxAttempts bounds how often one extent or request is tried again after
// its connection broke, or after the receiver refused it as damaged.
const maxAttempts = 10

func (t *Txn) send(ctx context.Context, h extentHead, data []byte) error {
	c := t.c
	broken, refused := 0, 0
	for attempt := 0; ; attempt++ {
		s := c.pick()
		cn, err := s.get(ctx)
		if err != nil {
			s.release()
			return err
		}
		rep, err := cn.sendExtent(ctx, h, data, attempt)
		s.release()
		if err == nil {
			if rerr := rep.err(); rerr != nil {
				var re *RemoteError
				if errors.As(rerr, &re) && re.Code == codeCorrupt {
					c.refused.Add(1)
					if refused++; refused >= maxAttempts {
						return fmt.Errorf("refused as damaged %d times in a row: check the network path and the memory of both hosts: %w", refused, rerr)
					}
					continue
				}
				return rerr
			}
			c.extents.Add(1)
			return nil
		}
		if !isConnErr(err) {
			return err
		}
		if broken++; broken >= maxAttempts {
			return fmt.Errorf("the connection broke %d times while sending it: %w", broken, err)
		}
		if err := c.sleep(ctx, broken-1); err != nil {
			return err
		}
		// The receiver may have staged it before the connection broke.
		staged, err := c.staged(ctx, h.Seq)
		if err != nil {
			return err
		}
		if covers(staged, h.Off, h.Len) {
			c.skipped.Add(1)
			c.extents.Add(1)
			return nil
		}
		c.resent.Add(1)
	}
}

func (c *Client) staged(ctx context.Context, seq uint64) ([]replica.Extent, error) {
	rep, err := c.call(ctx, request{Op: "staged", Seq: seq}, c.opts.IOTimeout)
	if err != nil {
		return nil, fmt.Errorf("ask what is staged: %w", err)
	}
	return rep.Staged, nil
}

// covers reports whether the merged, sorted extents hold [off, off+n).
func covers(exts []replica.Extent, off, n int64) bool {
	i := sort.Search(len(exts), func(i int) bool { return exts[i].Off+exts[i].Len > off })
	return i < len(exts) && exts[i].Off <= off && off+n <= exts[i].Off+exts[i].Len
}

// call sends a control request and waits for its reply (timeout 0: as long
// as ctx allows), redialling when the connection breaks. Every request is
// idempotent at the receiver.
func (c *Client) call(ctx context.Context, q request, timeout time.Duration) (*reply, error) {
	for broken := 0; ; {
		s := c.pick()
		cn, err := s.get(ctx)
		if err != nil {
			s.release()
			return nil, err
		}
		rep, err := cn.request(ctx, q, timeout)
		s.release()
		if err == nil {
			if rerr := rep.err(); rerr != nil {
				return nil, rerr
			}
			return rep, nil
		}
		if !isConnErr(err) {
			return nil, err
		}
		if broken++; broken >= maxAttempts {
			return nil, fmt.Errorf("the connection broke %d times: %w", broken, err)
		}
		if err := c.sleep(ctx, broken-1); err != nil {
			return nil, err
		}
	}
}

// backoff is the pause before retry n: exponential from 100 ms to 5 s,
// with jitter so that the streams do not come back in step.
func backoff(n int) time.Duration {
	d := 100 * time.Millisecond << min(n, 6)
	d = min(d, 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

func (c *Client) sleep(ctx context.Context, n int) error {
	t := time.NewTimer(backoff(n))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pick chooses the least busy stream, preferring those not being redialled.
func (c *Client) pick() *stream {
	c.pickMu.Lock()
	defer c.pickMu.Unlock()
	var best *stream
	for _, s := range c.streams {
		if best == nil || s.rank() < best.rank() {
			best = s
		}
	}
	best.load++
	return best
}

// stream is one of the parallel connections, redialled when it breaks.
type stream struct {
	c    *Client
	idx  int
	load int  // callers using it; guarded by c.pickMu
	down bool // being redialled; guarded by c.pickMu

	mu  sync.Mutex // one dial at a time
	cur *conn
}

func (s *stream) rank() int {
	if s.down {
		return s.load + 1000
	}
	return s.load
}

func (s *stream) release() {
	s.c.pickMu.Lock()
	s.load--
	s.c.pickMu.Unlock()
}

func (s *stream) setDown(v bool) {
	s.c.pickMu.Lock()
	s.down = v
	s.c.pickMu.Unlock()
}

// get returns the stream's live connection, dialling (with backoff, for up
// to RetryFor) when there is none.
func (s *stream) get(ctx context.Context) (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.cur.alive() {
		return s.cur, nil
	}
	c := s.c
	if c.closed.Load() {
		return nil, errClosed
	}
	redial := s.cur != nil
	s.setDown(true)
	defer s.setDown(false)
	var first time.Time
	for n := 0; ; n++ {
		cn, _, err := c.connect(ctx)
		if err == nil {
			if redial {
				c.reconnects.Add(1)
			}
			s.cur = cn
			return cn, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if permanent(err) {
			return nil, hintFor(err)
		}
		if first.IsZero() {
			first = c.opts.Clock.Now()
		} else if c.opts.Clock.Since(first) > c.opts.RetryFor {
			return nil, fmt.Errorf("the receiver has been unreachable for %s (check that it runs and the network between): %w", c.opts.RetryFor, err)
		}
		if err := c.sleep(ctx, n); err != nil {
			return nil, err
		}
	}
}

// connect dials the receiver, says hello and starts reading replies.
func (c *Client) connect(ctx context.Context) (*conn, *Info, error) {
	dial := c.opts.dial
	if dial == nil {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	raw, err := dial(ctx, c.target.Addr)
	if err != nil {
		return nil, nil, err
	}
	var nc net.Conn = &countConn{Conn: raw, n: &c.wire}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	if c.target.TLS {
		cfg := c.opts.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = c.target.Host
		}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, nil, err
		}
		nc = tc
	}
	_ = nc.SetDeadline(deadline(30 * time.Second))
	bw := bufio.NewWriterSize(nc, 64<<10)
	if _, err := bw.WriteString(magic); err != nil {
		return nil, nil, err
	}
	if err := writeJSON(bw, frameHello, 0, hello{Version: wireVersion, Path: c.target.Path, Size: c.opts.Size, BlockSize: c.opts.BlockSize}); err != nil {
		return nil, nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(nc, 16<<10)
	var buf []byte
	typ, _, p, err := readFrame(br, &buf)
	if err != nil {
		return nil, nil, err
	}
	var rep reply
	if typ != frameReply || json.Unmarshal(p, &rep) != nil {
		return nil, nil, fmt.Errorf("%w: the hello was not answered: is %s a standby receiver?", errProtocol, c.target.Addr)
	}
	if err := rep.err(); err != nil {
		return nil, nil, err
	}
	if rep.Info == nil {
		return nil, nil, fmt.Errorf("%w: the hello was answered without the replica's state", errProtocol)
	}
	_ = nc.SetDeadline(time.Time{})
	cn := &conn{c: c, nc: nc, bw: bw, pending: map[uint32]chan *reply{}, done: make(chan struct{})}
	go cn.readLoop(br)
	ok = true
	return cn, rep.Info, nil
}

// permanent tells errors that redialling cannot cure: refusals by the
// receiver, certificates, protocol violations.
func permanent(err error) bool {
	var re *RemoteError
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ae tls.AlertError
	var oe *net.OpError
	switch {
	case errors.As(err, &re), errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &he),
		errors.As(err, &ci), errors.As(err, &ae), errors.Is(err, errProtocol), errors.Is(err, errClosed):
		return true
	case errors.As(err, &oe) && oe.Op == "remote error": // a TLS alert from the receiver
		return true
	}
	return false
}

// hintFor adds what to do to the errors a user can act on.
func hintFor(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		return fmt.Errorf("%w (the receiver refused our TLS client certificate: give one signed by the CA the receiver trusts, --tls-cert and --tls-key)", err)
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return fmt.Errorf("%w (the receiver's certificate is not trusted: give its CA with --ca)", err)
	}
	return err
}

// connError marks a failure of the connection (not a refusal): the
// request may be tried again on another.
type connError struct{ err error }

func (e *connError) Error() string { return "connection lost: " + e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

func isConnErr(err error) bool {
	var ce *connError
	return errors.As(err, &ce) && !errors.Is(err, errClosed) && !permanent(ce.err)
}

// conn is one live connection of a stream.
type conn struct {
	c   *Client
	nc  net.Conn
	wmu sync.Mutex
	bw  *bufio.Writer

	pmu     sync.Mutex
	pending map[uint32]chan *reply
	nextID  uint32

	once sync.Once
	err  error
	done chan struct{}
}

func (cn *conn) alive() bool {
	select {
	case <-cn.done:
		return false
	default:
		return true
	}
}

func (cn *conn) fail(err error) {
	cn.once.Do(func() {
		cn.err = err
		close(cn.done)
		cn.nc.Close()
	})
}

func (cn *conn) readLoop(br *bufio.Reader) {
	var buf []byte
	for {
		typ, id, p, err := readFrame(br, &buf)
		if err != nil {
			cn.fail(err)
			return
		}
		rep := &reply{}
		if typ != frameReply || json.Unmarshal(p, rep) != nil {
			cn.fail(fmt.Errorf("%w: a reply that is not one", errProtocol))
			return
		}
		cn.pmu.Lock()
		ch := cn.pending[id]
		delete(cn.pending, id)
		cn.pmu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

func (cn *conn) register() (uint32, chan *reply) {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	cn.nextID++
	ch := make(chan *reply, 1)
	cn.pending[cn.nextID] = ch
	return cn.nextID, ch
}

func (cn *conn) unregister(id uint32) {
	cn.pmu.Lock()
	delete(cn.pending, id)
	cn.pmu.Unlock()
}

// roundTrip writes one message with write and waits for its reply.
func (cn *conn) roundTrip(ctx context.Context, timeout time.Duration, write func(id uint32) error) (*reply, error) {
	id, ch := cn.register()
	defer cn.unregister(id)
	// A cancelled context must not leave a write or a wait hanging: it
	// closes the connection, which the stream redials when next used.
	stop := context.AfterFunc(ctx, func() { cn.fail(ctx.Err()) })
	defer stop()
	cn.wmu.Lock()
	err := write(id)
	if err == nil {
		err = cn.bw.Flush()
	}
	cn.wmu.Unlock()
	if err != nil {
		cn.fail(err)
		return nil, cn.lost(ctx, err)
	}
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-cn.done:
		return nil, cn.lost(ctx, cn.err)
	case <-timer:
		err := fmt.Errorf("no answer within %s", timeout)
		cn.fail(err)
		return nil, &connError{err}
	}
}

func (cn *conn) lost(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cn.err != nil && !cn.alive() {
		err = cn.err
	}
	return &connError{err}
}

func (cn *conn) request(ctx context.Context, q request, timeout time.Duration) (*reply, error) {
	return cn.roundTrip(ctx, timeout, func(id uint32) error {
		_ = cn.nc.SetWriteDeadline(deadline(cn.c.opts.IOTimeout))
		return writeJSON(cn.bw, frameRequest, id, q)
	})
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize+chunkSize/16+1024); return &b }}

// sendExtent writes an extent in chunks, each compressed when that helps,
// and waits for the receiver's answer.
func (cn *conn) sendExtent(ctx context.Context, h extentHead, data []byte, attempt int) (*reply, error) {
	c := cn.c
	return cn.roundTrip(ctx, c.opts.IOTimeout, func(id uint32) error {
		_ = cn.nc.SetWriteDeadline(deadline(c.opts.IOTimeout))
		if err := writeFrame(cn.bw, frameExtent, id, h.marshal()); err != nil {
			return err
		}
		bp := chunkPool.Get().(*[]byte)
		defer chunkPool.Put(bp)
		var head [chunkHeadLen]byte
		for off := 0; off < len(data); off += chunkSize {
			piece := data[off:min(off+chunkSize, len(data))]
			body := c.enc.EncodeAll(piece, (*bp)[:0])
			head[0] = encZstd
			if len(body) >= len(piece)-len(piece)/32 {
				head[0], body = encRaw, piece // compression does not pay
			} else {
				*bp = body[:0]
			}
			binary.LittleEndian.PutUint32(head[1:], uint32(len(piece)))
			if c.opts.tamper != nil {
				body = append([]byte(nil), body...)
				c.opts.tamper(h.Off, attempt, body)
			}
			if err := c.opts.Limiter.wait(ctx, frameHeadLen+chunkHeadLen+len(body)); err != nil {
				return err
			}
			_ = cn.nc.SetWriteDeadline(deadline(c.opts.IOTimeout))
			if err := writeFrame(cn.bw, frameChunk, id, head[:], body); err != nil {
				return err
			}
		}
		return nil
	})
}

// countConn counts the bytes written to the network.
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}
