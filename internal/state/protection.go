package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Pin records that a job holds a recovery point of a VM: retention must
// keep it until the job releases it.
type Pin struct {
	Job   string
	VM    string
	Point uint64
	At    time.Time
}

// Protection is the replication state of one VM as the daemon last saw it.
type Protection struct {
	VM          string
	State       string // e.g. protecting, paused, failed-over, error
	Reason      string // why it is in that state, for a human
	RPO         time.Duration
	LastPoint   uint64
	LastPointAt time.Time
	Updated     time.Time
}

// Fence keeps something from coming back by itself after a failover: a
// VM's replication, a site's circuit connection. Scope is "vm" or "site" (or
// any other kind of thing the caller fences); a fence exists until Unfence.
type Fence struct {
	Scope  string
	Name   string
	Reason string
	Job    string
	At     time.Time
}

// Pin records p. Pinning twice is the same as once.
func (t *Tx) Pin(p Pin) error {
	if p.At.IsZero() {
		p.At = t.db.clock.Now()
	}
	var n int
	if err := t.tx.QueryRowContext(t.ctx, `SELECT COUNT(*) FROM pins WHERE job_id = ? AND vm = ? AND point_seq = ?`, p.Job, p.VM, int64(p.Point)).Scan(&n); err != nil {
		return fmt.Errorf("state: pin point %d of %s for job %s: %w", p.Point, p.VM, p.Job, err)
	}
	if n > 0 {
		return nil
	}
	_, err := t.exec(fmt.Sprintf("pin point %d of %s for job %s", p.Point, p.VM, p.Job),
		`INSERT INTO pins (job_id, vm, point_seq, pinned_at) VALUES (?, ?, ?, ?)`, p.Job, p.VM, int64(p.Point), encTime(p.At))
	return err
}

// Unpin releases the pins of a job: all of them when vm is empty, else
// those on that VM. Releasing what is not pinned is not an error.
func (t *Tx) Unpin(job, vm string) error {
	if vm == "" {
		_, err := t.exec("unpin points of job "+job, `DELETE FROM pins WHERE job_id = ?`, job)
		return err
	}
	_, err := t.exec("unpin points of "+vm+" for job "+job, `DELETE FROM pins WHERE job_id = ? AND vm = ?`, job, vm)
	return err
}

// Pins lists the pins on a VM's points (all VMs when vm is empty), by VM
// and point.
func (db *DB) Pins(ctx context.Context, vm string) ([]Pin, error) {
	q := `SELECT job_id, vm, point_seq, pinned_at FROM pins`
	var args []any
	if vm != "" {
		q += ` WHERE vm = ?`
		args = append(args, vm)
	}
	rows, err := db.r.QueryContext(ctx, q+` ORDER BY vm, point_seq, job_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("state: list pins: %w", err)
	}
	defer rows.Close()
	var out []Pin
	for rows.Next() {
		var p Pin
		var seq int64
		var at sql.NullString
		if err := rows.Scan(&p.Job, &p.VM, &seq, &at); err != nil {
			return nil, fmt.Errorf("state: list pins: %w", err)
		}
		p.Point = uint64(seq)
		if p.At, err = decTime(at); err != nil {
			return nil, fmt.Errorf("state: list pins: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list pins: %w", err)
	}
	return out, nil
}

// SetProtection stores the protection state of p.VM, replacing the last.
func (t *Tx) SetProtection(p Protection) error {
	if p.Updated.IsZero() {
		p.Updated = t.db.clock.Now()
	}
	op := "set protection of " + p.VM
	res, err := t.exec(op, `UPDATE protection SET state = ?, reason = ?, rpo_ms = ?, last_point = ?, last_point_at = ?, updated_at = ? WHERE vm = ?`,
		p.State, p.Reason, p.RPO.Milliseconds(), int64(p.LastPoint), encTime(p.LastPointAt), encTime(p.Updated), p.VM)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		if err != nil {
			return fmt.Errorf("state: %s: %w", op, err)
		}
		return nil
	}
	_, err = t.exec(op, `INSERT INTO protection (vm, state, reason, rpo_ms, last_point, last_point_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		p.VM, p.State, p.Reason, p.RPO.Milliseconds(), int64(p.LastPoint), encTime(p.LastPointAt), encTime(p.Updated))
	return err
}

// Protections lists the protection state of every VM (one VM when vm is
// not empty), by name.
func (db *DB) Protections(ctx context.Context, vm string) ([]Protection, error) {
	q := `SELECT vm, state, reason, rpo_ms, last_point, last_point_at, updated_at FROM protection`
	var args []any
	if vm != "" {
		q += ` WHERE vm = ?`
		args = append(args, vm)
	}
	rows, err := db.r.QueryContext(ctx, q+` ORDER BY vm`, args...)
	if err != nil {
		return nil, fmt.Errorf("state: list protection: %w", err)
	}
	defer rows.Close()
	var out []Protection
	for rows.Next() {
		var p Protection
		var rpo, last int64
		var lastAt, upd sql.NullString
		if err := rows.Scan(&p.VM, &p.State, &p.Reason, &rpo, &last, &lastAt, &upd); err != nil {
			return nil, fmt.Errorf("state: list protection: %w", err)
		}
		p.RPO, p.LastPoint = time.Duration(rpo)*time.Millisecond, uint64(last)
		var e1, e2 error
		p.LastPointAt, e1 = decTime(lastAt)
		p.Updated, e2 = decTime(upd)
		if err := errors.Join(e1, e2); err != nil {
			return nil, fmt.Errorf("state: protection of %s: %w", p.VM, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list protection: %w", err)
	}
	return out, nil
}

// Protection reads the protection state of one VM; a VM never recorded
// returns an error wrapping ErrNotFound.
func (db *DB) Protection(ctx context.Context, vm string) (Protection, error) {
	ps, err := db.Protections(ctx, vm)
	if err != nil {
		return Protection{}, err
	}
	if len(ps) == 0 {
		return Protection{}, fmt.Errorf("state: protection of %s: %w", vm, ErrNotFound)
	}
	return ps[0], nil
}

// Fence raises a fence. Raising one that stands keeps the first (its job,
// reason and time): the fence records who fenced first.
func (t *Tx) Fence(f Fence) error {
	if f.At.IsZero() {
		f.At = t.db.clock.Now()
	}
	var n int
	if err := t.tx.QueryRowContext(t.ctx, `SELECT COUNT(*) FROM fences WHERE scope = ? AND name = ?`, f.Scope, f.Name).Scan(&n); err != nil {
		return fmt.Errorf("state: fence %s %s: %w", f.Scope, f.Name, err)
	}
	if n > 0 {
		return nil
	}
	_, err := t.exec("fence "+f.Scope+" "+f.Name, `INSERT INTO fences (scope, name, reason, job_id, fenced_at) VALUES (?, ?, ?, ?, ?)`,
		f.Scope, f.Name, f.Reason, f.Job, encTime(f.At))
	return err
}

// Unfence lowers a fence; lowering one that is down is not an error.
func (t *Tx) Unfence(scope, name string) error {
	_, err := t.exec("unfence "+scope+" "+name, `DELETE FROM fences WHERE scope = ? AND name = ?`, scope, name)
	return err
}

// Fences lists the fences that stand, by scope and name.
func (db *DB) Fences(ctx context.Context) ([]Fence, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT scope, name, reason, job_id, fenced_at FROM fences ORDER BY scope, name`)
	if err != nil {
		return nil, fmt.Errorf("state: list fences: %w", err)
	}
	defer rows.Close()
	var out []Fence
	for rows.Next() {
		var f Fence
		var at sql.NullString
		if err := rows.Scan(&f.Scope, &f.Name, &f.Reason, &f.Job, &at); err != nil {
			return nil, fmt.Errorf("state: list fences: %w", err)
		}
		if f.At, err = decTime(at); err != nil {
			return nil, fmt.Errorf("state: fence %s %s: %w", f.Scope, f.Name, err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list fences: %w", err)
	}
	return out, nil
}

// Fenced tells whether a fence stands on scope/name, and returns it.
func (db *DB) Fenced(ctx context.Context, scope, name string) (Fence, bool, error) {
	var f Fence
	var at sql.NullString
	err := db.r.QueryRowContext(ctx, `SELECT scope, name, reason, job_id, fenced_at FROM fences WHERE scope = ? AND name = ?`, scope, name).
		Scan(&f.Scope, &f.Name, &f.Reason, &f.Job, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Fence{}, false, nil
	}
	if err != nil {
		return Fence{}, false, fmt.Errorf("state: read fence %s %s: %w", scope, name, err)
	}
	if f.At, err = decTime(at); err != nil {
		return Fence{}, false, fmt.Errorf("state: fence %s %s: %w", scope, name, err)
	}
	return f, true, nil
}
