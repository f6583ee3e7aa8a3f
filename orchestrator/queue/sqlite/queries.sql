-- Every SQL statement of the SQLite backend lives in this file, each under a `-- name:` header.
-- orchestrator/queue/sqlite/sqlfile.py loads it; only orchestrator/queue/sqlite/ executes it.

-- name: schema
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'IN_PROGRESS', 'DONE', 'FAILED', 'BLOCKED', 'CANCELLED')),
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    unknown_seen INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until REAL,
    heartbeat_at REAL,
    due_at REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    budget REAL,
    error TEXT,
    detail TEXT,
    plan TEXT
);
-- WITHOUT ROWID: the key is the table's own b-tree, one page written per effect instead of a
-- rowid table's page and its key index's page.
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY,
    task INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    worker TEXT,
    t REAL NOT NULL,
    result TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    wall REAL NOT NULL,
    event TEXT NOT NULL,
    task INTEGER,
    key TEXT,
    state TEXT,
    prev TEXT,
    attempt INTEGER,
    epoch INTEGER,
    worker TEXT,
    error TEXT,
    actor TEXT,
    notes TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_task ON events (task, seq);
CREATE INDEX IF NOT EXISTS events_operator ON events (seq) WHERE actor IS NOT NULL;
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    profile_name TEXT NOT NULL,
    profile TEXT NOT NULL,
    seed INTEGER NOT NULL,
    speed REAL NOT NULL,
    origin REAL NOT NULL,
    started_wall REAL NOT NULL,
    started_soak REAL NOT NULL,
    status TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    shipped_seq INTEGER NOT NULL,
    next_arrival INTEGER NOT NULL DEFAULT 0,
    next_dup INTEGER NOT NULL DEFAULT 0,
    supervisor_pid INTEGER,
    alive_wall REAL,
    ended_wall REAL,
    verdict TEXT,
    commit_sha TEXT,
    log_path TEXT,
    inflight_cap INTEGER,
    clock TEXT  -- the skip clock's file (core/skipclock.py); NULL: the constant clock
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', 'orch-queue/1');

-- name: indexes
-- Every index on `tasks` that a lease or a completion changes is one more WAL page per commit, so
-- the hot path touches three: tasks_due (leaving PENDING), tasks_state_id (old and new state) and
-- the row itself. Expired leases are found through tasks_state_id: IN_PROGRESS holds the tasks in
-- flight (bounded by workers x lease limit, or by the in-flight cap), not the queue's depth. The
-- error indexes are partial: a task with no error class is in neither.
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due_at, id) WHERE state = 'PENDING';
-- The on-call tasks view (orchestrator/queue/search.py, served by orchestrator/queue/sqlite/backend.py): keyset pages newest first by state, the id
-- bounds of an enqueue-time range, and the tasks that ever had an error class: every event that
-- gives a task an error class records it (retry_scheduled, failed, lease_expired,
-- guardrail_exceeded, blocked, closed_failed), so events_error holds each (class, task) an attempt
-- ever ended with. It is partial: leases, heartbeats and completions do not write it.
-- tasks_error_state (the last error) serves `ops status`' errors by class and `ops retry --error-class`.
CREATE INDEX IF NOT EXISTS tasks_state_id ON tasks (state, id);
CREATE INDEX IF NOT EXISTS tasks_error_state ON tasks (error, state, id) WHERE error IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_enqueued ON tasks (enqueued_at);
CREATE INDEX IF NOT EXISTS events_error ON events (error, task) WHERE error IS NOT NULL;
-- Indexes of earlier versions that every lease and completion paid for (see above), and the last
-- error's index the tasks view no longer reads. An older database gets this block once when it is
-- opened (orchestrator/queue/sqlite/store.py).
DROP INDEX IF EXISTS tasks_lease;
DROP INDEX IF EXISTS tasks_state;
DROP INDEX IF EXISTS tasks_error;

-- name: schema_version
SELECT value FROM meta WHERE name = 'schema';

-- name: insert_event
INSERT INTO events (t, wall, event, task, key, state, prev, attempt, epoch, worker, error, actor, notes, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_task
INSERT INTO tasks (key, payload, state, max_attempts, due_at, enqueued_at, updated_at, budget)
VALUES (:key, :payload, 'PENDING', :max_attempts, :due_at, :now, :now, :budget)
ON CONFLICT (key) DO NOTHING
RETURNING id;

-- name: task_by_id
SELECT * FROM tasks WHERE id = ?;

-- name: task_by_key
SELECT * FROM tasks WHERE key = ?;

-- name: any_due
SELECT 1 FROM tasks INDEXED BY tasks_due WHERE state = 'PENDING' AND due_at <= ? LIMIT 1;

-- name: count_in_flight
SELECT count(*) FROM tasks WHERE state = 'IN_PROGRESS';

-- name: lease
-- INDEXED BY: without statistics the planner prefers tasks_state_id (state = ?) and then sorts every
-- PENDING row for the LIMIT, so a lease costs O(queue depth); tasks_due yields the due rows in order.
UPDATE tasks
SET state = 'IN_PROGRESS', epoch = epoch + 1, attempt = attempt + 1, worker = :worker,
    lease_until = :until, heartbeat_at = :now, updated_at = :now
WHERE id IN (
    SELECT id FROM tasks INDEXED BY tasks_due
    WHERE state = 'PENDING' AND due_at <= :now ORDER BY due_at, id LIMIT :limit
)
RETURNING id, key, payload, attempt, max_attempts, epoch, budget, enqueued_at;

-- name: effect_exists
-- Asked for each leased task in the lease's transaction. Not in the lease's RETURNING: there (SQLite
-- 3.40) a correlated subquery cannot use the effects index and scans every effect, once per task.
SELECT EXISTS (SELECT 1 FROM effects WHERE key = ?);

-- name: heartbeat
UPDATE tasks SET lease_until = :until, heartbeat_at = :now
WHERE id = :id AND state = 'IN_PROGRESS' AND epoch = :epoch;

-- name: fenced_row
SELECT id, key, state, attempt, max_attempts, epoch, unknown_seen FROM tasks WHERE id = ?;

-- name: insert_effect
INSERT INTO effects (key, task, epoch, worker, t, result) VALUES (:key, :task, :epoch, :worker, :t, :result)
ON CONFLICT (key) DO NOTHING;

-- name: effect_by_key
SELECT * FROM effects WHERE key = ?;

-- name: finish_returning
UPDATE tasks
SET state = :state, worker = NULL, lease_until = NULL, updated_at = :now, error = :error, detail = :detail
WHERE id = :id AND state = 'IN_PROGRESS' AND epoch = :epoch
RETURNING key, attempt, budget;

-- name: finish_unfenced_returning
-- TEST-ONLY (QueueConfig.fencing = False, see docs/drills.md): the completion with no epoch fence.
UPDATE tasks
SET state = :state, worker = NULL, lease_until = NULL, updated_at = :now, error = :error, detail = :detail
WHERE id = :id AND :epoch IS NOT NULL
RETURNING key, attempt, budget;

-- name: finish
UPDATE tasks
SET state = :state, worker = NULL, lease_until = NULL, updated_at = :now, error = :error, detail = :detail
WHERE id = :id AND state = 'IN_PROGRESS' AND epoch = :epoch;

-- name: reschedule
UPDATE tasks
SET state = 'PENDING', worker = NULL, lease_until = NULL, updated_at = :now, due_at = :due_at,
    error = :error, detail = :detail, unknown_seen = unknown_seen + :unknown, attempt = attempt - :refund
WHERE id = :id AND state = 'IN_PROGRESS' AND epoch = :epoch;

-- name: expired_leases
-- Reads every task in flight (a few per worker, whatever the queue's depth), oldest task first.
SELECT id, key, attempt, max_attempts, epoch, worker, lease_until FROM tasks INDEXED BY tasks_state_id
WHERE state = 'IN_PROGRESS' AND lease_until < ? ORDER BY id LIMIT ?;

-- name: operator_update
UPDATE tasks
SET state = :state, worker = NULL, lease_until = NULL, updated_at = :now, due_at = :due_at,
    attempt = :attempt, unknown_seen = :unknown_seen, budget = :budget, plan = :plan,
    error = :error, detail = :detail
WHERE id = :id;

-- name: ids_by_state_error
SELECT id FROM tasks WHERE state = :state AND (:error IS NULL OR error = :error) ORDER BY id;

-- name: counts_by_state
SELECT state, count(*) AS n FROM tasks GROUP BY state;

-- name: errors_by_class
SELECT error, state, count(*) AS n FROM tasks WHERE error IS NOT NULL GROUP BY error, state ORDER BY n DESC;

-- name: oldest_pending
SELECT min(enqueued_at) FROM tasks WHERE state = 'PENDING';

-- name: count_expired
SELECT count(*) FROM tasks INDEXED BY tasks_state_id WHERE state = 'IN_PROGRESS' AND lease_until < ?;

-- name: in_flight_by_worker
SELECT worker, count(*) AS n, min(heartbeat_at) AS oldest_heartbeat FROM tasks
WHERE state = 'IN_PROGRESS' GROUP BY worker ORDER BY worker;

-- name: recent_operator_events
SELECT * FROM events
WHERE actor IS NOT NULL AND event IN ('cancelled', 'replanned', 'retried', 'closed_done', 'closed_failed')
ORDER BY seq DESC LIMIT ?;

-- name: task_events
SELECT * FROM events WHERE task = ? ORDER BY seq;

-- name: events_after
SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: last_seq
SELECT coalesce(max(seq), 0) FROM events;

-- name: count_tasks
SELECT count(*) FROM tasks;

-- name: count_effects
SELECT count(*) FROM effects;

-- name: active_run
SELECT * FROM runs WHERE status = 'running' ORDER BY started_wall DESC LIMIT 1;

-- name: insert_run
INSERT INTO runs (id, profile_name, profile, seed, speed, origin, started_wall, started_soak, status,
                  first_seq, shipped_seq, supervisor_pid, commit_sha, log_path, inflight_cap, clock)
VALUES (:id, :profile_name, :profile, :seed, :speed, :origin, :started_wall, :started_soak, 'starting',
        :first_seq, :first_seq, :supervisor_pid, :commit_sha, :log_path, :inflight_cap, :clock);

-- name: runs_columns
SELECT name FROM pragma_table_info('runs');

-- name: add_runs_clock
ALTER TABLE runs ADD COLUMN clock TEXT;

-- name: clock_probe
-- What the skip clock asks the database before a jump (core/skipclock.py `Probe`).
SELECT (SELECT due_at FROM tasks INDEXED BY tasks_due WHERE state = 'PENDING' AND due_at <= :now
        ORDER BY due_at DESC LIMIT 1),
       (SELECT due_at FROM tasks INDEXED BY tasks_due WHERE state = 'PENDING' AND due_at > :now
        ORDER BY due_at LIMIT 1),
       (SELECT min(lease_until) FROM tasks INDEXED BY tasks_state_id WHERE state = 'IN_PROGRESS'),
       (SELECT coalesce(max(seq), 0) FROM events);

-- name: current_run
SELECT * FROM runs WHERE status IN ('starting', 'running') ORDER BY started_wall DESC LIMIT 1;

-- name: start_run
UPDATE runs SET status = 'running', origin = :origin, started_wall = :origin, started_soak = :origin
WHERE id = :id AND status = 'starting';

-- name: run_by_id
SELECT * FROM runs WHERE id = ?;

-- name: latest_run
SELECT * FROM runs ORDER BY started_wall DESC LIMIT 1;

-- name: set_arrival_cursor
UPDATE runs SET next_arrival = :next, next_dup = :dup WHERE id = :id;

-- name: set_supervisor
UPDATE runs SET supervisor_pid = :pid, alive_wall = :wall WHERE id = :id;

-- name: end_run
UPDATE runs SET status = :status, ended_wall = :wall, verdict = :verdict, supervisor_pid = NULL
WHERE id = :id;

-- name: last_event_t
SELECT t FROM events ORDER BY seq DESC LIMIT 1;

-- name: run_finished_event
SELECT t, wall FROM events WHERE seq >= ? AND event = 'run_finished' ORDER BY seq DESC LIMIT 1;

-- name: blocked_since
SELECT id, budget FROM tasks WHERE state = 'BLOCKED' AND updated_at <= ? ORDER BY id LIMIT ?;

-- name: busiest_workers
SELECT worker, count(*) AS n FROM tasks WHERE state = 'IN_PROGRESS' AND worker IS NOT NULL
GROUP BY worker ORDER BY n DESC, worker;

-- name: count_open
SELECT count(*) FROM tasks WHERE state IN ('PENDING', 'IN_PROGRESS');

-- name: faults_by_kind
SELECT json_extract(data, '$.kind') AS kind, count(*) AS n FROM events
WHERE seq >= ? AND event = 'fault_injected' GROUP BY kind ORDER BY kind;

-- name: table_names
SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name;

-- name: tasks_page
-- The tasks view, newest first, keyset by id: [:lo, :hi] is the id range left to page through (an
-- enqueue-time range, capped below the previous page's last id). One range: two upper bounds would
-- make SQLite seek by one and filter by the other, reading every row in between.
SELECT id, key, state, attempt, max_attempts, epoch, worker, error, enqueued_at, updated_at FROM tasks
WHERE id BETWEEN :lo AND :hi ORDER BY id DESC LIMIT :limit;

-- name: tasks_page_state
SELECT id, key, state, attempt, max_attempts, epoch, worker, error, enqueued_at, updated_at
FROM tasks INDEXED BY tasks_state_id
WHERE state = :state AND id BETWEEN :lo AND :hi ORDER BY id DESC LIMIT :limit;

-- name: tasks_page_state_error
-- The tasks now in :state that ever had :error (see tasks_page_error), newest first.
SELECT t.id, t.key, t.state, t.attempt, t.max_attempts, t.epoch, t.worker, t.error, t.enqueued_at, t.updated_at
FROM events AS e INDEXED BY events_error JOIN tasks AS t ON t.id = e.task
WHERE e.error = :error AND e.task BETWEEN :lo AND :hi AND t.state = :state
GROUP BY e.task ORDER BY e.task DESC LIMIT :limit;

-- name: tasks_page_error
-- The tasks that ever had :error (on any attempt, not only the last), newest first: events_error
-- yields (error, task) in task order, so the page walks the index backwards from :hi and stops at
-- :limit tasks. GROUP BY folds a task's several events of that class into one row (t's columns
-- are the task's own: one task per group).
SELECT t.id, t.key, t.state, t.attempt, t.max_attempts, t.epoch, t.worker, t.error, t.enqueued_at, t.updated_at
FROM events AS e INDEXED BY events_error JOIN tasks AS t ON t.id = e.task
WHERE e.error = :error AND e.task BETWEEN :lo AND :hi
GROUP BY e.task ORDER BY e.task DESC LIMIT :limit;

-- name: task_had_error
SELECT EXISTS (SELECT 1 FROM events INDEXED BY events_error WHERE error = ? AND task = ?);

-- name: task_row_by_key
SELECT id, key, state, attempt, max_attempts, epoch, worker, error, enqueued_at, updated_at FROM tasks
WHERE key = ?;

-- name: task_row_by_id
SELECT id, key, state, attempt, max_attempts, epoch, worker, error, enqueued_at, updated_at,
    heartbeat_at, lease_until, budget, plan FROM tasks
WHERE id = ?;

-- name: first_id_enqueued_since
SELECT id FROM tasks INDEXED BY tasks_enqueued WHERE enqueued_at >= ? ORDER BY enqueued_at, id LIMIT 1;

-- name: last_id_enqueued_until
SELECT id FROM tasks INDEXED BY tasks_enqueued WHERE enqueued_at <= ? ORDER BY enqueued_at DESC, id DESC LIMIT 1;

-- name: integrity_check
PRAGMA integrity_check;

-- name: index_names
SELECT name FROM sqlite_master WHERE type = 'index';

-- name: schema_rows
SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name;

