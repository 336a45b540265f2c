package server

import (
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
)

func TestHuman(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{350 * time.Millisecond, "350ms"},
		{4210 * time.Millisecond, "4.2s"},
		{42 * time.Second, "42s"},
		{4*time.Minute + 12*time.Second, "4m 12s"},
		{20 * time.Minute, "20m"},
		{3*time.Hour + 5*time.Minute + 40*time.Second, "3h 6m"},
		{50 * time.Hour, "2d 2h"},
		{-90 * time.Second, "-1m 30s"},
	} {
		if got := human(c.d); got != c.want {
			t.Errorf("human(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	if got := ago(-5 * time.Second); got != "in 5s" {
		t.Errorf("ago of a future time: %q", got)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "/ui/",
		"/ui/jobs/drill-1":        "/ui/jobs/drill-1",
		"/ui/login":               "/ui/",
		"https://example.org/ui/": "/ui/",
		"//example.org/ui/":       "/ui/",
		"/ui/\\example.org":       "/ui/",
		"/v1/jobs":                "/ui/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTimeline(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	if tl := drawTimeline(nil, now); len(tl.Marks) != 0 {
		t.Errorf("no points, marks %v", tl.Marks)
	}
	// One point at now: drawn in the middle of a minute around it.
	tl := drawTimeline([]api.Point{{Seq: 1, Time: now, Kind: "app"}}, now)
	if len(tl.Marks) != 1 || tl.Marks[0].X != (tlLeft+tlRight)/2 || tl.Marks[0].Y != tlAppY {
		t.Errorf("one point: %+v", tl.Marks)
	}
	// Too many points: the newest are drawn.
	var ps []api.Point
	for i := range maxMarks + 3 {
		ps = append(ps, api.Point{Seq: uint64(i + 1), Time: now.Add(time.Duration(i-maxMarks) * time.Second), Kind: "crash"})
	}
	tl = drawTimeline(ps, now)
	if len(tl.Marks) != maxMarks || tl.Omitted != 3 {
		t.Errorf("%d marks, %d omitted; want %d and 3", len(tl.Marks), tl.Omitted, maxMarks)
	}
	for _, m := range tl.Marks {
		if m.X < tlLeft || m.X > tlRight {
			t.Fatalf("mark outside the axis: %+v", m)
		}
	}
}
