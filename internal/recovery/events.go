package recovery

import (
	"sync"

	"github.com/standby-dr/standby/internal/api"
)

// subscriberBuffer is how many events a subscriber may fall behind before
// it is dropped.
const subscriberBuffer = 256

// broker fans stored events out to subscribers. It never blocks the
// driver: a subscriber that falls too far behind has its channel closed
// and catches up from the store (Events after the last Seq it saw).
type broker struct {
	mu        sync.Mutex
	subs      map[*subscriber]struct{}
	observers []func(api.Event)
}

type subscriber struct {
	job string // "" for every job
	ch  chan api.Event
}

func (b *broker) subscribe(job string) (<-chan api.Event, func()) {
	s := &subscriber{job: job, ch: make(chan api.Event, subscriberBuffer)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*subscriber]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s.ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[s]; ok {
			delete(b.subs, s)
			close(s.ch)
		}
	}
}

func (b *broker) observe(fn func(api.Event)) {
	b.mu.Lock()
	b.observers = append(b.observers, fn)
	b.mu.Unlock()
}

func (b *broker) publish(ev api.Event) {
	b.mu.Lock()
	obs := b.observers
	for s := range b.subs {
		if s.job != "" && s.job != ev.Job {
			continue
		}
		select {
		case s.ch <- ev:
		default: // too far behind: let it catch up from the store
			delete(b.subs, s)
			close(s.ch)
		}
	}
	b.mu.Unlock()
	for _, fn := range obs {
		fn(ev)
	}
}
