package state

// migrations[i] takes the schema from version i to version i+1. Append only:
// a released migration never changes. Types and syntax stay portable:
// TEXT, INTEGER, BIGINT, plain indexes; times are TEXT in UTC with a fixed
// width so that they sort; JSON is TEXT.
var migrations = [][]string{
	{ // 1: jobs, steps, events, pins, protection, fences
		`CREATE TABLE jobs (
			id          TEXT PRIMARY KEY,
			operation   TEXT NOT NULL,
			plan        TEXT NOT NULL,
			status      TEXT NOT NULL,
			created_at  TEXT NOT NULL,
			started_at  TEXT,
			finished_at TEXT,
			params      TEXT NOT NULL,
			report      TEXT,
			error       TEXT NOT NULL
		)`,
		`CREATE INDEX jobs_status ON jobs (status)`,
		`CREATE INDEX jobs_created ON jobs (created_at)`,
		`CREATE TABLE steps (
			job_id      TEXT NOT NULL REFERENCES jobs (id),
			step_id     TEXT NOT NULL,
			position    INTEGER NOT NULL,
			action      TEXT NOT NULL,
			resource    TEXT NOT NULL,
			detail      TEXT NOT NULL,
			depends_on  TEXT NOT NULL,
			manual      INTEGER NOT NULL,
			policy      TEXT NOT NULL,
			timeout_ms  BIGINT NOT NULL,
			retries     INTEGER NOT NULL,
			backoff_ms  BIGINT NOT NULL,
			params      TEXT,
			status      TEXT NOT NULL,
			attempts    INTEGER NOT NULL,
			started_at  TEXT,
			finished_at TEXT,
			error       TEXT NOT NULL,
			output      TEXT,
			PRIMARY KEY (job_id, step_id)
		)`,
		`CREATE TABLE events (
			seq     BIGINT PRIMARY KEY,
			at      TEXT NOT NULL,
			job_id  TEXT NOT NULL,
			step_id TEXT NOT NULL,
			kind    TEXT NOT NULL,
			status  TEXT NOT NULL,
			message TEXT NOT NULL
		)`,
		`CREATE INDEX events_job ON events (job_id, seq)`,
		`CREATE TABLE pins (
			job_id    TEXT NOT NULL,
			vm        TEXT NOT NULL,
			point_seq BIGINT NOT NULL,
			pinned_at TEXT NOT NULL,
			PRIMARY KEY (job_id, vm, point_seq)
		)`,
		`CREATE INDEX pins_vm ON pins (vm, point_seq)`,
		`CREATE TABLE protection (
			vm            TEXT PRIMARY KEY,
			state         TEXT NOT NULL,
			reason        TEXT NOT NULL,
			rpo_ms        BIGINT NOT NULL,
			last_point    BIGINT NOT NULL,
			last_point_at TEXT,
			updated_at    TEXT NOT NULL
		)`,
		`CREATE TABLE fences (
			scope     TEXT NOT NULL,
			name      TEXT NOT NULL,
			reason    TEXT NOT NULL,
			job_id    TEXT NOT NULL,
			fenced_at TEXT NOT NULL,
			PRIMARY KEY (scope, name)
		)`,
	},
}

// SchemaVersion is the schema version this build writes.
func SchemaVersion() int { return len(migrations) }
