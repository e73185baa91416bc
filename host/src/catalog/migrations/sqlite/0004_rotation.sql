-- Keyward catalog, version 4: rotation, schedules, webhooks and notifications.

-- A key replaced by a rotation keeps its row, renamed "<name> (rotated at <time>)", and says
-- when. Only the current key of a virtual key's HSM name holds the name; the versions it
-- replaced share it.
ALTER TABLE sobjects ADD COLUMN rotated_at INTEGER;
DROP INDEX sobjects_external_label;
CREATE UNIQUE INDEX sobjects_external_label
    ON sobjects(group_id, lower(json_extract(external, '$.id.label')))
    WHERE external IS NOT NULL AND rotated_at IS NULL;
CREATE INDEX sobjects_deactivation ON sobjects(deactivation_date)
    WHERE deactivation_date IS NOT NULL AND destruction_date IS NULL;

-- One rotation policy per key (DSM `rotation_policy`, or a cron expression). The next due
-- time is stored, derived from the last rotation and the interval, so downtime is caught up
-- once; rotations act as the policy's owner.
DROP TABLE rotation_policies;
CREATE TABLE rotation_policies (
    kid             TEXT PRIMARY KEY REFERENCES sobjects(kid) ON DELETE CASCADE,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    policy          TEXT NOT NULL,            -- JSON: the policy as given
    owner_kind      TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    set_at          INTEGER NOT NULL,
    next_due        INTEGER,
    last_rotated_at INTEGER,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'failed')),
    failures        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE INDEX rotation_policies_due ON rotation_policies(next_due) WHERE status = 'active';

-- Cron jobs: a workflow on a schedule, in a time zone, acting as its owner.
CREATE TABLE jobs (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    workflow   TEXT NOT NULL,
    group_id   TEXT REFERENCES groups(id) ON DELETE CASCADE,
    cron       TEXT NOT NULL,
    time_zone  TEXT NOT NULL,
    input      TEXT NOT NULL DEFAULT '{}',
    owner_kind TEXT NOT NULL,
    owner_id   TEXT NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    next_due   INTEGER,
    last_fire  INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX jobs_due ON jobs(next_due) WHERE paused = 0;

-- Each fire of a policy or job, claimed by one conditional statement keyed by (what, when):
-- whichever daemon inserts it (or takes over an expired lease) runs it, and only the holder
-- of the current attempt may record the outcome.
CREATE TABLE fires (
    kind            TEXT NOT NULL CHECK (kind IN ('rotation', 'job')),
    target          TEXT NOT NULL,            -- the key's or the job's id
    due_at          INTEGER NOT NULL,
    account_id      TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    worker          TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'retry', 'succeeded', 'failed')),
    next_attempt_at INTEGER,
    claimed_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    run_id          TEXT,
    error           TEXT,
    PRIMARY KEY (kind, target, due_at)
);
CREATE INDEX fires_retry ON fires(next_attempt_at) WHERE status = 'retry';
CREATE INDEX fires_running ON fires(lease_until) WHERE status = 'running';

-- The HSM-side steps of a rotation (a linked copy taking the new material, a virtual key
-- getting a new version), written before any HSM call: a daemon that stops mid-rotation
-- leaves them pending, for the next one to adopt what the HSM made or to retry.
CREATE TABLE rotation_steps (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('copy', 'native', 'keyward')),
    target_kid     TEXT NOT NULL,             -- the virtual key that gets a new version
    group_id       TEXT NOT NULL,
    source_kid     TEXT,                      -- the catalog key whose material it takes
    prior_version  TEXT,                      -- its HSM version before
    deactivate_old INTEGER NOT NULL DEFAULT 0,
    owner_kind     TEXT NOT NULL,
    owner_id       TEXT NOT NULL,
    worker         TEXT NOT NULL,
    lease_until    INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    new_kid        TEXT,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX rotation_steps_pending ON rotation_steps(lease_until) WHERE status = 'pending';
CREATE UNIQUE INDEX rotation_steps_one_per_key ON rotation_steps(target_kid) WHERE status = 'pending';

-- Webhooks in: a signed POST runs a workflow.
CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name            TEXT NOT NULL UNIQUE,     -- the path: POST /webhooks/{name}
    kind            TEXT NOT NULL CHECK (kind IN ('standard', 'event_grid')),
    workflow        TEXT,
    group_id        TEXT REFERENCES groups(id) ON DELETE CASCADE,
    secret          BLOB NOT NULL,            -- sealed
    previous_secret BLOB,                     -- sealed; accepted until previous_until
    previous_until  INTEGER,
    owner_kind      TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);

-- Each delivery and what became of it. Only accepted deliveries hold their message id (so a
-- repeat is recognised): a refused one must not block the genuine message of that id.
CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    message_id  TEXT,
    received_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    run_id      TEXT,
    error       TEXT,
    UNIQUE (webhook_id, message_id)
);

-- Notifications out: endpoints, and the outbox each event is written to in the transaction
-- of the change it reports.
CREATE TABLE notification_endpoints (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    secret          BLOB NOT NULL,            -- sealed
    events          TEXT NOT NULL,            -- JSON list of event types
    enabled         INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,         -- the webhook-id, the same on every attempt
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    endpoint_id     TEXT NOT NULL REFERENCES notification_endpoints(id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = 'pending';

-- Expiry warnings sent, so each goes out once per key, threshold and deactivation date.
CREATE TABLE expiry_notices (
    kid               TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    threshold_days    INTEGER NOT NULL,       -- 30, 7, 1, or 0 for "expired"
    deactivation_date INTEGER NOT NULL,
    sent_at           INTEGER NOT NULL,
    PRIMARY KEY (kid, threshold_days, deactivation_date)
);
