package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Removed is what Down took away.
type Removed struct {
	Lab        string   `json:"lab"`
	Machines   int      `json:"machines"`
	Namespaces []string `json:"namespaces"`
	Dir        string   `json:"dir,omitempty"`
}

// Down removes everything of a lab: the machines' process groups (SIGTERM,
// then SIGKILL after grace), every namespace carrying the lab's prefix and
// whatever runs in it (their links go with them), and the lab directory
// (dir, or DefaultDir(lab)). It needs no state file: after a crash it
// finds the namespaces by prefix. On a lab that is gone it does nothing.
func Down(ctx context.Context, lab, dir string, grace time.Duration) (Removed, error) {
	if dir == "" {
		dir = DefaultDir(lab)
	}
	out := Removed{Lab: lab, Namespaces: []string{}}
	var errs []error
	if st, err := readState(filepath.Join(dir, "state.json")); err == nil {
		var live []*machine
		for _, m := range st.Machines {
			if len(m.group().Members()) > 0 {
				m.group().Signal(syscall.SIGTERM)
				live = append(live, m)
			}
		}
		out.Machines = len(live)
		deadline := time.NewTimer(grace)
		defer deadline.Stop()
	wait:
		for _, m := range live {
			for len(m.group().Members()) > 0 {
				select {
				case <-deadline.C:
					break wait
				case <-ctx.Done():
					break wait
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		for _, m := range live {
			m.group().Signal(syscall.SIGKILL)
		}
	}
	names, err := listNamespaces(Prefix(lab))
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range names {
		if err := deleteNamespace(context.WithoutCancel(ctx), ns); err != nil {
			errs = append(errs, err)
			continue
		}
		out.Namespaces = append(out.Namespaces, ns)
	}
	if _, err := os.Stat(dir); err == nil {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		} else {
			out.Dir = dir
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("netlab: down %s: %w; run it again", lab, err)
	}
	return out, nil
}

// Close releases nothing: every call takes and drops the lab lock. It is
// there so that callers treat the provider like the others.
func (p *Provider) Close() error { return nil }
