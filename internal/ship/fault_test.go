package ship

import (
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/standby-dr/standby/internal/clock"
)

// cutProxy forwards connections to a receiver and cuts each after it has
// carried upAfter bytes from the sender, or in the middle of the first
// reply from the receiver once it has carried downAfter bytes from the
// sender (0: no limit), as long as cuts are left. It counts the bytes it
// forwards from senders.
type cutProxy struct {
	ln                 net.Listener
	target             string
	upAfter, downAfter int64
	left               atomic.Int32
	cuts               atomic.Int32
	up                 atomic.Int64
	wg                 sync.WaitGroup
}

func startCutProxy(t *testing.T, target string, upAfter, downAfter int64, cuts int32) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, upAfter: upAfter, downAfter: downAfter}
	p.left.Store(cuts)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.wg.Add(2)
		closeBoth := sync.OnceFunc(func() { in.Close(); out.Close() })
		var up atomic.Int64 // bytes from the sender on this connection
		go p.pipe(out, in, func(k int) int {
			if p.upAfter > 0 && up.Load()+int64(k) >= p.upAfter && p.claimCut() {
				return int(p.upAfter - up.Load())
			}
			return -1
		}, &up, closeBoth)
		go p.pipe(in, out, func(k int) int {
			if p.downAfter > 0 && up.Load() >= p.downAfter && p.claimCut() {
				return k / 2
			}
			return -1
		}, nil, closeBoth)
	}
}

// pipe copies from src to dst; when cut says so (>= 0), it passes that many
// bytes of the read and closes both ends.
func (p *cutProxy) pipe(dst, src net.Conn, cut func(k int) int, count *atomic.Int64, closeBoth func()) {
	defer p.wg.Done()
	defer closeBoth()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			part := cut(k)
			if part >= 0 {
				k = part
			}
			if _, err := dst.Write(buf[:k]); err != nil {
				return
			}
			if count != nil {
				count.Add(int64(k))
				p.up.Add(int64(k))
			}
			if part >= 0 {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) claimCut() bool {
	for {
		l := p.left.Load()
		if l <= 0 {
			return false
		}
		if p.left.CompareAndSwap(l, l-1) {
			p.cuts.Add(1)
			return true
		}
	}
}

func (p *cutProxy) url(path string) string { return "tcp://" + p.ln.Addr().String() + "/" + path }

// Connections cut in the middle of a point: the sender redials, asks what
// is staged, and finishes without staging any extent twice; the bytes on
// the wire exceed the point's by at most what was in flight at each cut.
func TestResumeAfterConnectionsAreCut(t *testing.T) {
	for _, tc := range []struct {
		name               string
		upAfter, downAfter int64
	}{
		{"mid-extent", 3*testBlock + testBlock/3, 0},
		// Cut in the middle of a reply once two extents went up: the
		// receiver staged an extent whose acknowledgement is lost.
		{"acks-lost", 0, 2 * testBlock},
	} {
		t.Run(tc.name, func(t *testing.T) { testResume(t, tc.upAfter, tc.downAfter) })
	}
}

func testResume(t *testing.T, upAfter, downAfter int64) {
	ctx := testContext(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	const blocks = 24
	makeImage(t, src, blocks, 3)
	rewriteBlocks(t, src, 1, 4) // every block random: nothing compresses
	root := filepath.Join(dir, "root")
	tr := startReceiver(t, root, nil)
	const cuts = 5
	px := startCutProxy(t, tr.addr, upAfter, downAfter, cuts)
	const streams = 4
	c, err := Dial(ctx, px.url("vm/disk"), Options{Streams: streams, Size: blocks * testBlock, BlockSize: testBlock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := push(ctx, c, src, dir, streams)
	if err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	c.Close()
	tr.stop()
	if got := px.cuts.Load(); got != cuts {
		t.Fatalf("%d connections cut, want %d", got, cuts)
	}
	rs := tr.rc.Stats()
	t.Logf("sender %+v; receiver %+v; %d bytes through the proxy for %d of data", st, rs, px.up.Load(), blocks*testBlock)
	if rs.Resent != 0 {
		t.Errorf("%d extents were staged twice: acknowledged or staged extents were sent again", rs.Resent)
	}
	// Each cut loses at most the extents in flight on that connection: two.
	if limit := int64(blocks*testBlock) + cuts*2*(testBlock+8<<10) + 64<<10; px.up.Load() > limit {
		t.Errorf("%d bytes on the wire, more than %d: acknowledged extents were sent again", px.up.Load(), limit)
	}
	if st.Reconnects == 0 {
		t.Errorf("no stream was redialled after %d cuts", cuts)
	}
	if downAfter > 0 && st.Skipped == 0 {
		t.Errorf("no extent was found staged after its acknowledgement was lost")
	}
	if got := pointHash(t, replicaDir(root, "vm/disk"), p.Seq); got != fileHash(t, src) {
		t.Error("the point differs from the source")
	}
}

// The bandwidth cap, shared by the streams, holds within 15%.
func TestBandwidthCap(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	const blocks = 24
	makeImage(t, src, blocks, 5)
	rewriteBlocks(t, src, 1, 6)
	tr := startReceiver(t, filepath.Join(dir, "root"), nil)
	const rate = 8 << 20
	clk := clock.Real{}
	c, err := Dial(ctx, tr.url("vm/disk"), Options{Streams: 4, Size: blocks * testBlock, BlockSize: testBlock, Limiter: NewLimiter(rate, clk)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := c.Stats().WireBytes
	start := clk.Now()
	if _, err := push(ctx, c, src, dir, 4); err != nil {
		t.Fatal(err)
	}
	secs := clk.Since(start).Seconds()
	got := float64(c.Stats().WireBytes-before) / secs
	t.Logf("%.2f MiB/s under a cap of %.2f MiB/s (%.2f s)", got/(1<<20), float64(rate)/(1<<20), secs)
	if got > rate*1.15 || got < rate*0.85 {
		t.Errorf("%.2f MiB/s, want %.2f MiB/s within 15%%", got/(1<<20), float64(rate)/(1<<20))
	}
}
