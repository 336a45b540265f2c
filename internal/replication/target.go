package replication

import (
	"context"
	"path/filepath"

	"github.com/standby-dr/standby/internal/replica"
)

// Txn is one point being staged at a target. WriteExtent and WriteHole are
// called from several streams at once; each returns once its extent is
// durable at the target. *replica.Txn is one.
type Txn interface {
	Seq() uint64
	Staged() []replica.Extent
	WriteExtent(ctx context.Context, off int64, data []byte, hash [32]byte) error
	WriteHole(ctx context.Context, off, length int64) error
	Commit(ctx context.Context, meta replica.PointMeta) (replica.Point, error)
	Abort() error
}

// Info describes a target's replica.
type Info struct {
	// Name identifies the replica, so the block hashes kept at the source
	// are matched with the replica they were committed to.
	Name      string
	Size      int64
	BlockSize int64
	// Newest is the newest committed point; Seq 0 when there is none.
	Newest replica.Point
}

// Target is a replica that takes points: one in this process, or one behind
// a receiver.
type Target interface {
	Info(ctx context.Context) (Info, error)
	Begin(ctx context.Context) (Txn, error)
}

// Local is a Target writing to a replica opened in this process.
func Local(r *replica.Replica) Target { return local{r} }

type local struct{ r *replica.Replica }

func (l local) Info(ctx context.Context) (Info, error) {
	name, err := filepath.Abs(l.r.Dir())
	if err != nil {
		name = l.r.Dir()
	}
	info := Info{Name: "local:" + name, Size: l.r.Size(), BlockSize: l.r.BlockSize()}
	if ps := l.r.Points(); len(ps) > 0 {
		info.Newest = ps[len(ps)-1]
	}
	return info, nil
}

func (l local) Begin(ctx context.Context) (Txn, error) {
	t, err := l.r.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return t, nil
}
