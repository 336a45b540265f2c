//go:build linux

// Command linkem joins two TUN devices with an emulated long-distance link:
// a one-way delay, random loss and a rate cap with a bounded queue, in
// each direction. bench/streams uses it where the kernel has no tc netem.
//
//	linkem -a sbA -b sbB -delay 20ms -loss 0.001 -rate-mbit 200
//
// It creates the two devices (move them into namespaces and address them
// afterwards), prints "ready", and forwards until SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	a := flag.String("a", "", "name of the first TUN device")
	b := flag.String("b", "", "name of the second TUN device")
	delay := flag.Duration("delay", 20*time.Millisecond, "one-way delay")
	loss := flag.Float64("loss", 0.001, "probability that a packet is lost, each way")
	mbit := flag.Float64("rate-mbit", 200, "rate cap in Mbit/s, each way")
	queue := flag.Duration("queue", 0, "longest a packet may wait for the link (default: two round trips)")
	flag.Parse()
	if *a == "" || *b == "" {
		fmt.Fprintln(os.Stderr, "linkem: -a and -b name the TUN devices")
		os.Exit(2)
	}
	if *queue == 0 {
		*queue = 4 * *delay
	}
	fa, err := openTUN(*a)
	if err != nil {
		fmt.Fprintf(os.Stderr, "linkem: %s: %v\n", *a, err)
		os.Exit(3)
	}
	fb, err := openTUN(*b)
	if err != nil {
		fmt.Fprintf(os.Stderr, "linkem: %s: %v\n", *b, err)
		os.Exit(3)
	}
	l := link{delay: *delay, loss: *loss, bytesPerSec: *mbit * 1e6 / 8, queue: *queue}
	ab, ba := &direction{link: l}, &direction{link: l}
	go ab.run(fa, fb)
	go ba.run(fb, fa)
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	fmt.Fprintf(os.Stderr, "linkem: %s->%s %d packets, %d lost, %d queue drops; %s->%s %d packets, %d lost, %d queue drops\n",
		*a, *b, ab.packets.Load(), ab.lost.Load(), ab.dropped.Load(), *b, *a, ba.packets.Load(), ba.lost.Load(), ba.dropped.Load())
}

type link struct {
	delay       time.Duration
	loss        float64
	bytesPerSec float64
	queue       time.Duration
}

type packet struct {
	due  time.Time
	data []byte
}

type direction struct {
	link
	packets, lost, dropped atomic.Int64
}

// run reads packets from in and writes them to out: each leaves when the
// link is free (the rate cap), arrives a delay later, and is lost at
// random or dropped when the queue is full.
func (d *direction) run(in, out int) {
	q := make(chan packet, 1<<16)
	go func() {
		for p := range q {
			// Packets due within half a millisecond go out together: one
			// timer per packet would cost more CPU than the link carries.
			if w := time.Until(p.due); w > 500*time.Microsecond {
				time.Sleep(w)
			}
			_, _ = syscall.Write(out, p.data)
		}
	}()
	var free time.Time // when the link has sent what is queued
	buf := make([]byte, 65536)
	for {
		n, err := syscall.Read(in, buf)
		if err != nil {
			if err == syscall.EINTR || err == syscall.EAGAIN {
				continue
			}
			fmt.Fprintf(os.Stderr, "linkem: read: %v\n", err)
			os.Exit(3)
		}
		d.packets.Add(1)
		now := time.Now()
		if free.Before(now) {
			free = now
		}
		if free.Sub(now) > d.queue {
			d.dropped.Add(1)
			continue
		}
		free = free.Add(time.Duration(float64(n) / d.bytesPerSec * float64(time.Second)))
		if rand.Float64() < d.loss {
			d.lost.Add(1)
			continue
		}
		q <- packet{due: free.Add(d.delay), data: append([]byte(nil), buf[:n]...)}
	}
}

// openTUN creates a TUN device without packet information headers.
func openTUN(name string) (int, error) {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var req [40]byte // struct ifreq
	copy(req[:16], name)
	const iffTUN, iffNoPI = 0x0001, 0x1000
	*(*uint16)(unsafe.Pointer(&req[16])) = iffTUN | iffNoPI
	const tunSetIff = 0x400454ca
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		syscall.Close(fd)
		return -1, errno
	}
	return fd, nil
}
