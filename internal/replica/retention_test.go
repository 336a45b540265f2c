package replica

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

// every20 is 19 points, one every 20 minutes from 06:00 to 12:00.
func every20(mod func(p *Point)) []Point {
	var out []Point
	start := time.Date(2030, 1, 2, 6, 0, 0, 0, time.UTC)
	for i := 0; i < 19; i++ {
		p := Point{Seq: uint64(i + 1), Time: start.Add(time.Duration(i) * 20 * time.Minute), Kind: KindCrash}
		if mod != nil {
			mod(&p)
		}
		out = append(out, p)
	}
	return out
}

func seqRange(a, b uint64) []uint64 {
	var out []uint64
	for s := a; s <= b; s++ {
		out = append(out, s)
	}
	return out
}

func TestRetentionPlan(t *testing.T) {
	noon := time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	recent := seqRange(13, 19) // 10:00 to 12:00
	for _, tc := range []struct {
		name   string
		points []Point
		now    time.Time
		policy Retention
		keep   []uint64
	}{
		{"all recent", every20(nil), time.Date(2030, 1, 2, 7, 0, 0, 0, time.UTC).Add(6 * time.Hour).Add(-time.Hour), Retention{Recent: 8 * time.Hour}, seqRange(1, 19)},
		{"one an hour after two hours", every20(nil), noon, Retention{}, append([]uint64{3, 6, 9, 12}, recent...)},
		{"app-consistent preferred", every20(func(p *Point) {
			if p.Seq == 4 || p.Seq == 11 {
				p.Kind = KindApp
			}
		}), noon, Retention{}, append([]uint64{3, 4, 9, 11}, recent...)},
		{"window", every20(nil), noon, Retention{Window: 4 * time.Hour}, append([]uint64{9, 12}, recent...)},
		{"pinned beyond the window and thinned", every20(func(p *Point) { p.Pinned = p.Seq == 1 || p.Seq == 10 }),
			noon, Retention{Window: 4 * time.Hour}, append([]uint64{1, 9, 10, 12}, recent...)},
		{"newest kept past the window", every20(nil), noon.Add(72 * time.Hour), Retention{}, []uint64{19}},
		{"half-hour thinning", every20(nil), noon, Retention{Recent: time.Hour, Every: 30 * time.Minute}, []uint64{2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 16, 17, 18, 19}},
		{"no points", nil, noon, Retention{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var keep []uint64
			for _, d := range tc.policy.Plan(tc.points, tc.now) {
				if d.Reason == "" {
					t.Errorf("point %d: no reason", d.Seq)
				}
				if d.Keep {
					keep = append(keep, d.Seq)
				}
			}
			slices.Sort(keep)
			if !slices.Equal(keep, tc.keep) {
				t.Fatalf("kept %v, want %v", keep, tc.keep)
			}
		})
	}
}

func TestPruneMergesUndo(t *testing.T) {
	const bs, size = 64 << 10, 24 * 64 << 10
	ctx := context.Background()
	start := time.Date(2030, 1, 2, 6, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	r, dir := newReplica(t, size, bs, clk)
	m := newModel(size, bs)
	rng := rand.New(rand.NewPCG(8, 8))
	for i := 0; i < 19; i++ {
		frac := 0.3
		if i == 0 {
			frac = 1
		}
		apply(t, r, m, m.randomChanges(rng, frac), PointMeta{Time: start.Add(time.Duration(i) * 20 * time.Minute)})
	}
	if err := r.Pin(7, true); err != nil {
		t.Fatal(err)
	}
	v3, err := r.View(3)
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(start.Add(6 * time.Hour))
	dropped, err := r.Prune(ctx, Retention{Window: 5 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// 06:xx points are past the window; 07: keeps 6, 7 pinned; 08: 9; 09: 12.
	if want := []uint64{1, 2, 3, 4, 5, 8, 10, 11}; !slices.Equal(dropped, want) {
		t.Fatalf("dropped %v, want %v", dropped, want)
	}
	checkAll(t, r, m)
	if _, err := v3.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrNoPoint) {
		t.Fatalf("read from a view of a pruned point: %v, want ErrNoPoint", err)
	}
	r.Close()
	r, err = Open(dir, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkAll(t, r, m)

	// Long after: everything goes but the newest and the pinned point.
	clk.Advance(72 * time.Hour)
	if _, err := r.Prune(ctx, Retention{}); err != nil {
		t.Fatal(err)
	}
	var left []uint64
	for _, p := range r.Points() {
		left = append(left, p.Seq)
	}
	if !slices.Equal(left, []uint64{7, 19}) {
		t.Fatalf("left %v, want [7 19]", left)
	}
	checkAll(t, r, m)
	for _, tc := range []struct {
		seq  uint64
		want string
	}{{19, "newest point"}, {7, "pinned"}, {3, "no such point 3"}} {
		if err := r.Drop(ctx, tc.seq); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("drop %d: %v, want %q", tc.seq, err, tc.want)
		}
	}
	if err := r.Pin(7, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Drop(ctx, 7); err != nil {
		t.Fatal(err)
	}
	checkAll(t, r, m)
}
