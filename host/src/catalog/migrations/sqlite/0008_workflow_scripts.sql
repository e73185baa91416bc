-- Keyward catalog, version 8: an account's own versions of workflow scripts. Every put,
-- restore and revert adds a version; the newest one is in use. Versions are never changed or
-- removed (except with their account), so any of them can be restored.

CREATE TABLE workflow_scripts (
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    source        TEXT,             -- NULL: the account went back to the daemon's version
    author        TEXT NOT NULL,    -- user:<id> or app:<id>
    created_at    INTEGER NOT NULL,
    restored_from INTEGER,          -- the version this one copies, for restores
    comment       TEXT,
    PRIMARY KEY (account_id, name, version)
);
