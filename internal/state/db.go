package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/standby-dr/standby/internal/clock"
)

// ErrNotFound is wrapped by reads of a row that does not exist.
var ErrNotFound = errors.New("not found")

// ErrNewerSchema is wrapped when the database was written by a newer
// standby than this one.
var ErrNewerSchema = errors.New("database schema is newer than this standby")

// busyTimeout is how long a statement waits for a lock held by another
// connection (a reader checkpointing, another process) before failing.
const busyTimeout = 10 * time.Second

// DB is the daemon's state database. It is safe for concurrent use.
type DB struct {
	path  string
	w     *sql.DB // one connection: the only writer
	r     *sql.DB // readers
	clock clock.Clock
}

// Open opens or creates the database at path and brings its schema to the
// current version. It refuses a database whose schema is newer.
func Open(ctx context.Context, path string, c clock.Clock) (*DB, error) {
	if c == nil {
		c = clock.Real{}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	w, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	db := &DB{path: path, w: w, clock: c}
	if err := db.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	db.r = r
	return db, nil
}

// dsn builds the driver's connection string. Pragmas run on every new
// connection: WAL, synchronous=FULL (a commit is fsynced before it returns),
// a busy timeout, foreign keys. The writer begins transactions IMMEDIATE so
// that it takes the write lock up front.
func dsn(path string, writer bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+fmt.Sprint(busyTimeout.Milliseconds())+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	if writer {
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Close closes the database.
func (db *DB) Close() error {
	var errs []error
	if db.r != nil {
		errs = append(errs, db.r.Close())
	}
	errs = append(errs, db.w.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("state: close %s: %w", db.path, err)
	}
	return nil
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Version reads the schema version stored in the database.
func (db *DB) Version(ctx context.Context) (int, error) {
	var v int
	err := db.w.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("state: read schema version of %s: %w", db.path, err)
	}
	return v, nil
}

func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("state: open %s: create schema_version: %w (is it a standby state database?)", db.path, err)
	}
	for {
		done, err := db.migrateOne(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateOne applies the next migration, if any, in its own transaction.
func (db *DB) migrateOne(ctx context.Context) (done bool, err error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("state: migrate %s: %w", db.path, err)
	}
	defer tx.Rollback()
	var v int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return false, fmt.Errorf("state: migrate %s: %w", db.path, err)
		}
	case err != nil:
		return false, fmt.Errorf("state: migrate %s: read version: %w", db.path, err)
	}
	if v > len(migrations) {
		return false, fmt.Errorf("state: %s has schema version %d, this standby knows up to %d: %w; run the standby that wrote it, or a newer one", db.path, v, len(migrations), ErrNewerSchema)
	}
	if v == len(migrations) {
		return true, tx.Commit()
	}
	for _, stmt := range migrations[v] {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return false, fmt.Errorf("state: migrate %s to version %d: %w", db.path, v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, v+1); err != nil {
		return false, fmt.Errorf("state: migrate %s to version %d: %w", db.path, v+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("state: migrate %s to version %d: commit: %w", db.path, v+1, err)
	}
	return false, nil
}

// Tx is one write transaction. Its methods are the only writes there are.
type Tx struct {
	ctx context.Context
	tx  *sql.Tx
	db  *DB
}

// Update runs fn in one write transaction and commits it: when Update
// returns nil, everything fn wrote is durable. If fn returns an error,
// nothing it wrote is kept.
func (db *DB) Update(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("state: begin: %w", err)
	}
	defer sqlTx.Rollback()
	if err := fn(&Tx{ctx: ctx, tx: sqlTx, db: db}); err != nil {
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("state: commit: %w", err)
	}
	return nil
}

func (t *Tx) exec(op, q string, args ...any) (sql.Result, error) {
	res, err := t.tx.ExecContext(t.ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", op, err)
	}
	return res, nil
}

// timeFormat has a fixed width so that TEXT order is time order.
const timeFormat = "2006-01-02T15:04:05.000000000Z"

// encTime stores a zero time as NULL.
func encTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeFormat)
}

func decTime(s sql.NullString) (time.Time, error) {
	if !s.Valid || s.String == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(timeFormat, s.String)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: %w", s.String, err)
	}
	return t, nil
}

// encJSON stores empty JSON as NULL.
func encJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func decJSON(s sql.NullString) []byte {
	if !s.Valid || s.String == "" {
		return nil
	}
	return []byte(s.String)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
