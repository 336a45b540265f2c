package ship

import (
	"context"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

// Limiter is a token bucket of bytes per second, shared by the streams of
// a VM (pass the same Limiter to the Clients of all its disks). Bytes are
// counted as they are written to the connection, compressed.
type Limiter struct {
	clk   clock.Clock
	rate  float64 // bytes per second
	burst float64

	mu     sync.Mutex
	tokens float64 // may go negative: a debt the next callers wait out
	last   time.Time
}

// NewLimiter caps at bytesPerSec; 0 or less means no cap (nil). The burst
// is a twentieth of a second of traffic, at least one chunk, so that the
// cap holds over any second.
func NewLimiter(bytesPerSec int64, clk clock.Clock) *Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	if clk == nil {
		clk = clock.Real{}
	}
	burst := max(float64(bytesPerSec)/20, chunkSize)
	return &Limiter{clk: clk, rate: float64(bytesPerSec), burst: burst, last: clk.Now()}
}

// MbpsToBytes turns a megabit-per-second figure (bandwidthLimitMbps) into
// bytes per second.
func MbpsToBytes(mbps float64) int64 { return int64(mbps * 1e6 / 8) }

// wait takes n bytes from the bucket, sleeping until they are there.
func (l *Limiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := l.clk.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	debt := -l.tokens
	l.mu.Unlock()
	if debt <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(debt / l.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
