package replication

import (
	"slices"
	"sync"
	"time"
)

// RPO is the data a disaster would lose now: the age of the newest cut
// whose content is all committed at the replicas. That is the newest
// committed point, or a later cut that found nothing written since it (the
// replica then still equals the disk as of that cut). Before the first
// point there is no RPO: known is false.
func RPO(syncedAt, now time.Time) (rpo time.Duration, known bool) {
	if syncedAt.IsZero() {
		return 0, false
	}
	return max(now.Sub(syncedAt), 0), true
}

// alertChange says whether the RPO alert turns on or off: on when the RPO
// is above the threshold, off again once it is back at or under it. A zero
// threshold never alerts.
func alertChange(alerting bool, rpo time.Duration, known bool, threshold time.Duration) (on, changed bool) {
	above := known && threshold > 0 && rpo > threshold
	return above, above != alerting
}

// schedule is when a group cuts, from its policy.
type schedule struct {
	crashEvery time.Duration // 0: continuous
	appEvery   time.Duration // 0: never
	idlePoll   time.Duration // continuous mode, after a cut found nothing
}

// next returns when the next cut is due and whether it is app-consistent.
// lastCut is zero before the first cut (which is then due at once); lastApp
// is the last app-consistent cut, or the start.
func (s schedule) next(lastCut, lastApp time.Time, lastEmpty bool) (at time.Time, app bool) {
	switch {
	case lastCut.IsZero():
		at = time.Time{}
	case s.crashEvery > 0:
		at = lastCut.Add(s.crashEvery)
	case lastEmpty:
		at = lastCut.Add(s.idlePoll)
	default:
		at = lastCut // continuous: the next batch at once
	}
	if s.appEvery > 0 && !lastCut.IsZero() {
		if appAt := lastApp.Add(s.appEvery); !appAt.After(at) {
			return appAt, true
		}
	}
	return at, false
}

// Percentiles are figures of a series of durations, in milliseconds or
// seconds as named.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// series keeps the most recent samples of a duration and gives its
// percentiles.
type series struct {
	mu    sync.Mutex
	buf   []time.Duration
	next  int
	count int64
	max   time.Duration
}

const seriesKeep = 4096

func (s *series) add(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf) < seriesKeep {
		s.buf = append(s.buf, d)
	} else {
		s.buf[s.next] = d
		s.next = (s.next + 1) % seriesKeep
	}
	s.count++
	s.max = max(s.max, d)
}

// percentiles in unit (time.Millisecond for ms, time.Second for s).
func (s *series) percentiles(unit time.Duration) Percentiles {
	s.mu.Lock()
	v := slices.Clone(s.buf)
	p := Percentiles{Count: s.count, Max: float64(s.max) / float64(unit)}
	s.mu.Unlock()
	if len(v) == 0 {
		return p
	}
	slices.Sort(v)
	at := func(q float64) float64 {
		i := int(q*float64(len(v)-1) + 0.5)
		return float64(v[i]) / float64(unit)
	}
	p.P50, p.P99 = at(0.50), at(0.99)
	return p
}

// rate measures a byte counter's throughput over a sliding window.
type rate struct {
	mu      sync.Mutex
	samples []rateSample
	window  time.Duration
}

type rateSample struct {
	at    time.Time
	total int64
}

func (r *rate) add(at time.Time, total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, rateSample{at, total})
	cut := 0
	for cut < len(r.samples)-2 && at.Sub(r.samples[cut].at) > r.window {
		cut++
	}
	r.samples = r.samples[cut:]
}

// perSecond is the rate over the window, in bytes per second.
func (r *rate) perSecond() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) < 2 {
		return 0
	}
	a, b := r.samples[0], r.samples[len(r.samples)-1]
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(b.total-a.total) / dt
}
