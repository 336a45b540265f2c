package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/replica"
)

func TestReceiverFlags(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"receiver", "--root", root}, "--listen"},
		{[]string{"receiver", "--listen", "0.0.0.0:0", "--root", root, "--insecure-loopback"}, "not a loopback"},
		{[]string{"receiver", "--listen", "127.0.0.1:0", "--root", root}, "--tls-cert"},
		{[]string{"receiver", "--listen", "127.0.0.1:0", "--root", root, "--insecure-loopback", "--tls-cert", "x"}, "exclude"},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), tc.args, strings.NewReader(""), &out, &errb)
		if code != ExitBadInput || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 about %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// A receiver on loopback and a sync to it: the point arrives whole, the
// second sync ships only the change, and the receiver stops cleanly.
func TestReceiverAndSyncTo(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	var rlog bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(rctx, []string{"receiver", "--listen", addr, "--root", root, "--insecure-loopback"}, strings.NewReader(""), io.Discard, &rlog)
	}()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatalf("the receiver does not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	src := filepath.Join(dir, "disk.img")
	img := make([]byte, 6<<20)
	for i := range img[:3<<20] {
		img[i] = byte(i * 7 / 5)
	}
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	sync := func() ReplicaSyncTo {
		t.Helper()
		var out, errb bytes.Buffer
		code := Main(ctx, []string{"replica", "sync", "--source", src, "--to", "tcp://" + addr + "/vm1/data", "--threads", "3", "--block-size", "1MiB", "-o", "json"},
			strings.NewReader(""), &out, &errb)
		if code != 0 {
			t.Fatalf("sync: exit %d: %s", code, errb.String())
		}
		var res ReplicaSyncTo
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("sync output %q: %v", out.String(), err)
		}
		return res
	}
	r1 := sync()
	if r1.Seq != 1 || !r1.Created || r1.WireBytes == 0 {
		t.Errorf("first sync: %+v", r1)
	}
	copy(img[4<<20:], bytes.Repeat([]byte{9}, 1<<20))
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := sync()
	if r2.Seq != 2 || r2.BytesShipped != 1<<20 {
		t.Errorf("second sync: seq %d, %d bytes shipped, want 2 and one block", r2.Seq, r2.BytesShipped)
	}
	stop()
	if code := <-done; code != 0 {
		t.Fatalf("receiver: exit %d: %s", code, rlog.String())
	}
	if !strings.Contains(rlog.String(), "point committed") {
		t.Errorf("receiver log has no commit: %s", rlog.String())
	}
	r, err := replica.Open(filepath.Join(root, "vm1", "data"), replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err := r.View(2)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, v.Size())
	if _, err := v.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if blake3.Sum256(got) != blake3.Sum256(img) {
		t.Error("point 2 at the receiver differs from the source")
	}
}
