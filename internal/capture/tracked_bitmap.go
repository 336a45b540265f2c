package capture

import (
	"math/bits"
	"sync/atomic"
)

// bitmap is a set of block indexes. Setting and testing are atomic, so many
// writers may mark the same map at once.
type bitmap []uint64

func newBitmap(n int64) bitmap { return make(bitmap, (n+63)/64) }

// setRange adds [lo, hi).
func (b bitmap) setRange(lo, hi int64) {
	for lo < hi {
		w := lo / 64
		first := lo % 64
		last := min(hi-w*64, 64)
		var mask uint64
		if last-first == 64 {
			mask = ^uint64(0)
		} else {
			mask = ((uint64(1) << (last - first)) - 1) << first
		}
		if atomic.LoadUint64(&b[w])&mask != mask {
			atomic.OrUint64(&b[w], mask)
		}
		lo = w*64 + last
	}
}

func (b bitmap) set(i int64) { atomic.OrUint64(&b[i/64], uint64(1)<<(i%64)) }

func (b bitmap) has(i int64) bool { return atomic.LoadUint64(&b[i/64])&(uint64(1)<<(i%64)) != 0 }

// count is the number of members.
func (b bitmap) count() int64 {
	var n int64
	for i := range b {
		n += int64(bits.OnesCount64(atomic.LoadUint64(&b[i])))
	}
	return n
}

// orInto adds every member of b to dst.
func (b bitmap) orInto(dst bitmap) {
	for i := range b {
		if v := atomic.LoadUint64(&b[i]); v != 0 {
			atomic.OrUint64(&dst[i], v)
		}
	}
}

// next returns the first member at or after i, or -1.
func (b bitmap) next(i int64) int64 {
	for w := i / 64; w < int64(len(b)); w++ {
		v := atomic.LoadUint64(&b[w])
		if w == i/64 {
			v &= ^uint64(0) << (i % 64)
		}
		if v != 0 {
			return w*64 + int64(bits.TrailingZeros64(v))
		}
	}
	return -1
}

// scale maps a map of blocks of size from to one of blocks of size to
// (either a multiple of the other) over a disk of size bytes.
func (b bitmap) scale(from, to, size int64) bitmap {
	if from == to {
		return b
	}
	n := (size + to - 1) / to
	out := newBitmap(n)
	for i := b.next(0); i >= 0; i = b.next(i + 1) {
		lo := i * from / to
		hi := ((i+1)*from + to - 1) / to
		out.setRange(lo, min(hi, n))
	}
	return out
}
