-- Keyward catalog, version 9: a webhook's name is unique within its account, not across
-- accounts (the delivery path names the account: POST /webhooks/{account_id}/{name}), so
-- one account's names tell another nothing; and refused deliveries are counted in the
-- metrics, no longer stored one row each (anyone can send them).
--
-- SQLite cannot drop a column's UNIQUE constraint: both tables are made anew and renamed,
-- deliveries first, so that dropping the old webhooks table cascades into nothing.
CREATE TABLE webhooks_v9 (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,            -- the path: POST /webhooks/{account_id}/{name}
    kind            TEXT NOT NULL CHECK (kind IN ('standard', 'event_grid')),
    workflow        TEXT,
    group_id        TEXT REFERENCES groups(id) ON DELETE CASCADE,
    secret          BLOB NOT NULL,            -- sealed
    previous_secret BLOB,                     -- sealed; accepted until previous_until
    previous_until  INTEGER,
    owner_kind      TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
INSERT INTO webhooks_v9 (id, account_id, name, kind, workflow, group_id, secret, previous_secret,
                         previous_until, owner_kind, owner_id, created_at)
    SELECT id, account_id, name, kind, workflow, group_id, secret, previous_secret,
           previous_until, owner_kind, owner_id, created_at
    FROM webhooks;

CREATE TABLE webhook_deliveries_v9 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL REFERENCES webhooks_v9(id) ON DELETE CASCADE,
    message_id  TEXT,
    received_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    run_id      TEXT,
    error       TEXT,
    UNIQUE (webhook_id, message_id)
);
INSERT INTO webhook_deliveries_v9 (id, webhook_id, message_id, received_at, outcome, run_id, error)
    SELECT id, webhook_id, message_id, received_at, outcome, run_id, error
    FROM webhook_deliveries
    WHERE outcome <> 'refused';

DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
ALTER TABLE webhooks_v9 RENAME TO webhooks;
ALTER TABLE webhook_deliveries_v9 RENAME TO webhook_deliveries;
