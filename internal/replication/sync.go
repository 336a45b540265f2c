package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
)

// Streams bounds and default (Site Recovery's UploadThreadsPerVM).
const (
	DefaultThreads = 4
	MaxThreads     = 32
)

// Options tunes one sync. Zero values take the defaults.
type Options struct {
	// Threads is the number of parallel streams, 1-32 (default 4).
	Threads int
	// Kind of the point: replica.KindCrash (default) or replica.KindApp.
	Kind string
	// StateDir holds the block hashes kept at the source (see
	// capture.Options.StateDir).
	StateDir string
	// Workers read and hash the source; default one per core.
	Workers int
	// Clock stamps the cut and times the sync. Default clock.Real.
	Clock clock.Clock
	// Progress, when set, is told the bytes of the disk dealt with so far
	// and the disk size. Calls are serialised.
	Progress func(done, total int64)
}

// Result is one committed point and what it cost.
type Result struct {
	Point        replica.Point `json:"point"`
	Size         int64         `json:"size"`         // disk size in bytes
	BlockSize    int64         `json:"blockSize"`    // bytes
	Threads      int           `json:"threads"`      // parallel streams
	BytesRead    int64         `json:"bytesRead"`    // read from the source
	BytesShipped int64         `json:"bytesShipped"` // extent content handed to the target
	BytesWritten int64         `json:"bytesWritten"` // data the point wrote at the replica
	Extents      int64         `json:"extents"`      // data extents shipped
	Holes        int64         `json:"holes"`        // zeroed extents shipped
	Seconds      float64       `json:"seconds"`      // wall time of the whole sync
	Full         bool          `json:"full"`         // every block was sent: no usable hashes of the previous point
	Reason       string        `json:"reason,omitempty"`
}

// Sync takes one point of source at target: scan, ship the changed extents
// through opts.Threads streams, commit with the block hashes of the whole
// disk, then record those hashes at the source. The source must be quiet for
// the point to be consistent. On error nothing is committed and the staged
// extents are dropped.
func Sync(ctx context.Context, source string, t Target, opts Options) (Result, error) {
	res, err := sync1(ctx, source, t, opts)
	if err != nil {
		return res, fmt.Errorf("replication: sync %s: %w", source, err)
	}
	return res, nil
}

func sync1(ctx context.Context, source string, t Target, opts Options) (Result, error) {
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	threads := opts.Threads
	if threads == 0 {
		threads = DefaultThreads
	}
	if threads < 1 || threads > MaxThreads {
		return Result{}, fmt.Errorf("%d streams: want 1 to %d", threads, MaxThreads)
	}
	start := clk.Now()
	info, err := t.Info(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{Size: info.Size, BlockSize: info.BlockSize, Threads: threads}

	cut, err := capture.Scan(ctx, source, capture.Base{Seq: info.Newest.Seq, Time: info.Newest.Time}, capture.Options{
		BlockSize: info.BlockSize,
		Workers:   opts.Workers,
		Buffers:   2 * threads,
		StateDir:  opts.StateDir,
		Target:    info.Name,
		Clock:     clk,
		Progress:  opts.Progress,
	})
	if err != nil {
		return res, err
	}
	defer cut.Close()
	if cut.Size() != info.Size {
		return res, fmt.Errorf("the source holds %d bytes, the replica %d: replicate to a new replica, or resize the source back", cut.Size(), info.Size)
	}

	txn, err := begin(ctx, t)
	if err != nil {
		return res, err
	}
	committed := false
	defer func() {
		if !committed {
			_ = txn.Abort() // the error that got us here is the one to report
		}
	}()

	shipped, extents, holes, err := ship(ctx, cut, txn, threads)
	res.BytesShipped, res.Extents, res.Holes = shipped, extents, holes
	st := cut.Stats()
	res.BytesRead, res.Full, res.Reason = st.BytesRead, st.Full, st.Reason
	if err != nil {
		return res, err
	}
	hashes, err := cut.Hashes()
	if err != nil {
		return res, err
	}
	p, err := txn.Commit(ctx, replica.PointMeta{Time: cut.Time(), Kind: opts.Kind, BlockHashes: hashes})
	if err != nil {
		return res, err
	}
	committed = true
	res.Point, res.BytesWritten = p, p.Bytes
	err = cut.Commit(p.Seq, p.Time)
	res.Seconds = clk.Since(start).Seconds()
	if err != nil {
		return res, fmt.Errorf("point %d is committed, but: %w", p.Seq, err)
	}
	return res, nil
}

// begin starts a point at t. A point left staged by an earlier, interrupted
// sync is dropped: its extents are of an older cut, and the source may have
// changed since, so none of them can be trusted to be of this one.
func begin(ctx context.Context, t Target) (Txn, error) {
	txn, err := t.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if len(txn.Staged()) == 0 {
		return txn, nil
	}
	if err := txn.Abort(); err != nil {
		return nil, fmt.Errorf("drop the point %d left staged by an interrupted sync: %w", txn.Seq(), err)
	}
	return t.Begin(ctx)
}

// ship runs the streams: each takes the next extent from the cut and
// writes it to the target, until the cut is exhausted or a stream fails.
func ship(ctx context.Context, cut *capture.Cut, txn Txn, threads int) (shipped, extents, holes int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var nShipped, nExtents, nHoles atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stream(ctx, cut, txn, &nShipped, &nExtents, &nHoles); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return nShipped.Load(), nExtents.Load(), nHoles.Load(), first
}

func stream(ctx context.Context, cut *capture.Cut, txn Txn, shipped, extents, holes *atomic.Int64) error {
	for {
		e, err := cut.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if e.Hole {
			err = txn.WriteHole(ctx, e.Off, e.Len)
		} else {
			err = txn.WriteExtent(ctx, e.Off, e.Data, e.Hash)
		}
		e.Release()
		switch {
		case err != nil:
			return err
		case e.Hole:
			holes.Add(1)
		default:
			shipped.Add(e.Len)
			extents.Add(1)
		}
	}
}
