package procgroup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stat is what /proc/PID/stat says of a process.
type Stat struct {
	State byte   // R, S, D, Z, ...
	PGrp  int    // process group
	Ticks uint64 // start time in clock ticks since boot
}

// ReadStat reads /proc/pid/stat.
func ReadStat(pid int) (Stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) == 0 {
		return Stat{}, false
	}
	pgrp, err1 := strconv.Atoi(f[2])
	ticks, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil {
		return Stat{}, false
	}
	return Stat{State: f[0][0], PGrp: pgrp, Ticks: ticks}, true
}

// Group is a machine's process group: its leader's pid, which is the
// group's id, and the leader's start time.
type Group struct {
	PID   int
	Ticks uint64
}

// Of names the group a just-started leader pid leads.
func Of(pid int) Group {
	g := Group{PID: pid}
	if st, ok := ReadStat(pid); ok {
		g.Ticks = st.Ticks
	}
	return g
}

// ours reports whether the group id still belongs to this group: its
// leader is the process that started at Ticks, or is gone while members
// remain (the kernel does not reuse the id of a group that has members).
func (g Group) ours() bool {
	if g.PID <= 0 {
		return false
	}
	st, ok := ReadStat(g.PID)
	return !ok || st.Ticks == g.Ticks
}

// Running reports whether the leader still runs (not a zombie).
func (g Group) Running() bool {
	st, ok := ReadStat(g.PID)
	return ok && st.Ticks == g.Ticks && st.State != 'Z'
}

// Members lists the live (not zombie) processes of the group.
func (g Group) Members() []int {
	if !g.ours() {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := ReadStat(pid); ok && st.PGrp == g.PID && st.State != 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// Signal sends sig to the whole group, if the id is still the group's.
func (g Group) Signal(sig syscall.Signal) {
	if g.ours() {
		_ = syscall.Kill(-g.PID, sig)
	}
}

// Stop sends SIGTERM, waits up to grace (or until ctx ends) for the group
// to be gone, then SIGKILL, and returns once no member is left. reaped,
// when set, must also report true before the group counts as gone (the
// provider's own wait on the leader).
func (g Group) Stop(ctx context.Context, grace time.Duration, reaped func() bool) error {
	gone := func() bool { return (reaped == nil || reaped()) && len(g.Members()) == 0 }
	wait := func(ctx context.Context, d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !gone() {
			select {
			case <-ctx.Done():
				return false
			case <-t.C:
				return false
			case <-tick.C:
			}
		}
		return true
	}
	if gone() {
		return nil
	}
	g.Signal(syscall.SIGTERM)
	if wait(ctx, grace) {
		return nil
	}
	g.Signal(syscall.SIGKILL)
	if wait(context.Background(), 5*time.Second) {
		return nil
	}
	return fmt.Errorf("processes %v of group %d survive SIGKILL", g.Members(), g.PID)
}
