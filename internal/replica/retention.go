package replica

import (
	"fmt"
	"time"
)

// Retention says which points to keep, as Site Recovery does: every point
// of the last Recent, then one per Every (the newest app-consistent one of
// each period if there is one, else the newest), up to Window. The newest
// point and pinned points are always kept.
type Retention struct {
	Window time.Duration // points older than this go (default 24h)
	Recent time.Duration // every point younger than this stays (default 2h)
	Every  time.Duration // beyond Recent, one point per period stays (default 1h)
}

// DefaultRetention is the retention used when none is given.
var DefaultRetention = Retention{Window: 24 * time.Hour, Recent: 2 * time.Hour, Every: time.Hour}

// Decision is what retention says of one point, and why.
type Decision struct {
	Seq    uint64 `json:"seq"`
	Keep   bool   `json:"keep"`
	Reason string `json:"reason"`
}

func (p Retention) withDefaults() Retention {
	if p.Window == 0 {
		p.Window = DefaultRetention.Window
	}
	if p.Recent == 0 {
		p.Recent = DefaultRetention.Recent
	}
	if p.Every == 0 {
		p.Every = DefaultRetention.Every
	}
	return p
}

// Plan decides, for points (oldest first) at time now, which to keep. It is
// pure: Prune applies it.
func (p Retention) Plan(points []Point, now time.Time) []Decision {
	p = p.withDefaults()
	out := make([]Decision, len(points))
	// The point each period keeps, by index.
	chosen := map[time.Time]int{}
	for i, pt := range points {
		out[i] = Decision{Seq: pt.Seq}
		age := now.Sub(pt.Time)
		switch {
		case i == len(points)-1:
			out[i].Keep, out[i].Reason = true, "newest point"
		case pt.Pinned:
			out[i].Keep, out[i].Reason = true, "pinned"
		case age > p.Window:
			out[i].Reason = fmt.Sprintf("older than the retention window of %s", p.Window)
		case age <= p.Recent:
			out[i].Keep, out[i].Reason = true, fmt.Sprintf("younger than %s: every point kept", p.Recent)
		default:
			period := pt.Time.Truncate(p.Every)
			if j, ok := chosen[period]; !ok || better(pt, points[j]) {
				chosen[period] = i
			}
		}
	}
	for period, j := range chosen {
		out[j].Keep = true
		out[j].Reason = fmt.Sprintf("kept for the %s period from %s", p.Every, period.UTC().Format(time.RFC3339))
	}
	for i, pt := range points {
		if out[i].Reason != "" {
			continue
		}
		j := chosen[pt.Time.Truncate(p.Every)]
		out[i].Reason = fmt.Sprintf("thinned: point %d is kept for its %s period", points[j].Seq, p.Every)
	}
	return out
}

// better says whether a should represent its period rather than b:
// app-consistent points first, then the newer one.
func better(a, b Point) bool {
	if (a.Kind == KindApp) != (b.Kind == KindApp) {
		return a.Kind == KindApp
	}
	return a.Seq > b.Seq
}
