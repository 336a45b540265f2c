package recovery_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/daemon"
	"github.com/standby-dr/standby/internal/state"
)

// The driver's tests run over a real SQLite file, through the same adapter
// the daemon wires.
type sqlStore = daemon.JobStore

func openStore(t *testing.T, path string, c clock.Clock) (sqlStore, *state.DB) {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "state.db")
	}
	db, err := state.Open(context.Background(), path, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return sqlStore{DB: db}, db
}
