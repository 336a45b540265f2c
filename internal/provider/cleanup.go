package provider

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Cleanup deletes everything job made, dependants first (DeleteOrder), and
// returns the errors of the deletes that failed, joined. Running it again
// after a failure finishes the work; on nothing left it does nothing.
func Cleanup(ctx context.Context, p Provider, job string) error {
	if job == "" {
		return fmt.Errorf("provider: cleanup: no job given: %w", ErrInvalid)
	}
	items, err := p.List(ctx, Filter{Job: job})
	if err != nil {
		return fmt.Errorf("provider: cleanup of job %s: %w", job, err)
	}
	var errs []error
	for _, k := range DeleteOrder {
		for _, it := range items {
			if it.Kind != k {
				continue
			}
			if k == KindVM {
				err = p.StopVM(ctx, it.Site, it.Name)
			} else {
				err = p.DeleteNetwork(ctx, it.Ref)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("provider: cleanup of job %s: %w", job, err))
			}
		}
	}
	return errors.Join(errs...)
}

// WaitCheck runs c every interval until it passes or ctx is done, and
// returns the last result. It returns an error only when the check cannot be
// run at all, or with the last result when ctx ends before it passed.
func WaitCheck(ctx context.Context, ck Checker, c Check, every time.Duration) (Result, error) {
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	for {
		res, err := ck.Check(ctx, c)
		if err != nil || res.OK {
			return res, err
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("provider: check %s from %s did not pass: %s: %w", c.target(), c.From, res.Detail, ctx.Err())
		case <-t.C:
		}
	}
}

func (c Check) target() string {
	if c.HTTP != "" {
		return c.HTTP
	}
	return c.TCP
}
