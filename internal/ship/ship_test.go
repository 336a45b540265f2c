package ship

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/replica"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A point shipped over 1, 4 and 16 streams arrives exactly, and a second
// point ships only what changed.
func TestShipStreams(t *testing.T) {
	for _, streams := range []int{1, 4, 16} {
		t.Run(fmt.Sprintf("%d-streams", streams), func(t *testing.T) {
			ctx := testContext(t)
			dir := t.TempDir()
			src := filepath.Join(dir, "disk.img")
			makeImage(t, src, 20, uint64(streams))
			root := filepath.Join(dir, "root")
			tr := startReceiver(t, root, nil)
			c, err := Dial(ctx, tr.url("vm1/data"), Options{Streams: streams, Size: 20 * testBlock, BlockSize: testBlock})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p1, err := push(ctx, c, src, dir, streams)
			if err != nil {
				t.Fatal(err)
			}
			want1 := fileHash(t, src)
			st := c.Stats()
			// 10 random blocks go raw, 5 text blocks shrink, 5 zero blocks are holes.
			if st.WireBytes > 11*testBlock || st.WireBytes < 10*testBlock {
				t.Errorf("%d bytes on the wire for 10 MiB of random data, 5 MiB of text and 5 MiB of zeros", st.WireBytes)
			}
			rewriteBlocks(t, src, 5, 99) // blocks 0, 5, 10, 15
			p2, err := push(ctx, c, src, dir, streams)
			if err != nil {
				t.Fatal(err)
			}
			if d := c.Stats().WireBytes - st.WireBytes; d > 4*testBlock+256<<10 {
				t.Errorf("the delta of 4 blocks took %d bytes on the wire", d)
			}
			want2 := fileHash(t, src)
			c.Close()
			tr.stop()
			rdir := replicaDir(root, "vm1/data")
			if got := pointHash(t, rdir, p1.Seq); got != want1 {
				t.Errorf("%d streams: point 1 differs from the source", streams)
			}
			if got := pointHash(t, rdir, p2.Seq); got != want2 {
				t.Errorf("%d streams: point 2 differs from the source", streams)
			}
			if rs := tr.rc.Stats(); rs.Refused != 0 || rs.Resent != 0 {
				t.Errorf("receiver stats %+v, want nothing refused or resent", rs)
			}
		})
	}
}

// A byte flipped on the wire is refused by the receiver, never staged, and
// the extent is sent again.
func TestCorruptExtentIsRefusedAndResent(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	makeImage(t, src, 8, 1)
	root := filepath.Join(dir, "root")
	tr := startReceiver(t, root, nil)
	// Block 0 is random (sent raw: the hash catches it), block 2 text (sent
	// compressed: decompression or the hash catches it).
	opts := Options{Streams: 2, Size: 8 * testBlock, BlockSize: testBlock}
	opts.tamper = func(off int64, attempt int, chunk []byte) {
		if (off == 0 || off == 2*testBlock) && attempt == 0 {
			chunk[len(chunk)/2] ^= 0x40
		}
	}
	c, err := Dial(ctx, tr.url("vm/disk"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := push(ctx, c, src, dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Refused != 2 {
		t.Errorf("sender counted %d refusals, want 2", st.Refused)
	}
	c.Close()
	tr.stop()
	if rs := tr.rc.Stats(); rs.Refused != 2 || rs.Resent != 0 {
		t.Errorf("receiver stats %+v, want 2 refused and nothing staged twice", rs)
	}
	if got := pointHash(t, replicaDir(root, "vm/disk"), p.Seq); got != fileHash(t, src) {
		t.Error("the point differs from the source")
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  string
	}{
		{"https://dr.example:7443/vm1/data", "https://dr.example:7443/vm1/data", ""},
		{"tcp://127.0.0.1:9000/vm1/data/", "tcp://127.0.0.1:9000/vm1/data", ""},
		{"tcp://127.0.0.1:9000/vm1//data", "", "segment"},
		{"ftp://h:1/vm/d", "", "scheme"},
		{"https://h/vm/d", "", "HOST:PORT"},
		{"https://h:1/", "", "VM/DISK"},
		{"https://h:1/vm/../etc", "", "segment"},
		{"https://h:1/vm/.hidden", "", "segment"},
		{"https://h:1/vm/d?x=1", "", "query"},
	} {
		got, err := ParseTarget(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseTarget(%q) error %v, want one about %q", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("ParseTarget(%q): %v", tc.in, err)
		case tc.err == "" && got.String() != tc.want:
			t.Errorf("ParseTarget(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestPlainModeIsLoopbackOnly(t *testing.T) {
	_, err := Dial(context.Background(), "tcp://192.0.2.1:7443/vm/d", Options{})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("plain mode to a remote address: %v, want a refusal", err)
	}
}

func TestCovers(t *testing.T) {
	exts := []replica.Extent{{Off: 0, Len: 4}, {Off: 8, Len: 8}}
	for _, tc := range []struct {
		off, n int64
		want   bool
	}{{0, 4, true}, {0, 5, false}, {4, 2, false}, {8, 8, true}, {12, 4, true}, {12, 8, false}, {16, 1, false}} {
		if got := covers(exts, tc.off, tc.n); got != tc.want {
			t.Errorf("covers(%d+%d) = %v, want %v", tc.off, tc.n, got, tc.want)
		}
	}
}
