-- Keyward catalog on PostgreSQL, version 9: the schema SQLite reaches through migrations 1..9,
-- in one step (PostgreSQL catalogs start here). The two schemas agree table by table and
-- column by column (a test compares them); where SQLite stores a flag as INTEGER 0/1,
-- PostgreSQL has BOOLEAN, and tables ordered by insertion have an identity column `seq`
-- standing for SQLite's rowid.
--
-- Times are Unix seconds (UTC). Ids are UUIDs as text. Secrets are stored sealed under the
-- master key; passwords as argon2 hashes; API keys as SHA-256 hashes.

CREATE TABLE catalog_meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT,
    crypto_policy TEXT
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    first_name    TEXT,
    last_name     TEXT,
    created_at    BIGINT NOT NULL,
    last_login    BIGINT
);

CREATE TABLE account_members (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('administrator', 'member', 'auditor')),
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, user_id)
);

CREATE TABLE groups (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    description         TEXT,
    created_at          BIGINT NOT NULL,
    created_by          TEXT NOT NULL,
    crypto_policy       TEXT,
    key_metadata_policy TEXT,
    custom_policies     TEXT NOT NULL DEFAULT '[]',
    hmg_kind            TEXT,
    hmg_config          TEXT,
    hmg_secrets         BYTEA,
    user_export         BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (account_id, name)
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('administrator', 'auditor')),
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE apps (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    description       TEXT,
    created_at        BIGINT NOT NULL,
    created_by        TEXT NOT NULL,
    api_key_hash      BYTEA NOT NULL,
    enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    default_group     TEXT REFERENCES groups(id) ON DELETE SET NULL,
    api_secret_sealed BYTEA,
    UNIQUE (account_id, name)
);

CREATE TABLE app_groups (
    app_id      TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    group_id    TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    permissions TEXT NOT NULL
        DEFAULT 'ENCRYPT,DECRYPT,WRAPKEY,UNWRAPKEY,SIGN,VERIFY,MACGENERATE,MACVERIFY,DERIVEKEY,AGREEKEY,MASKDECRYPT,EXPORT,MANAGE',
    PRIMARY KEY (app_id, group_id)
);

CREATE TABLE sobjects (
    kid               TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    group_id          TEXT NOT NULL REFERENCES groups(id),
    name              TEXT NOT NULL,
    description       TEXT,
    obj_type          TEXT NOT NULL CHECK (obj_type IN ('AES', 'RSA', 'EC')),
    key_size          BIGINT,
    elliptic_curve    TEXT,
    key_ops           TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    activation_date   BIGINT,
    deactivation_date BIGINT,
    compromise_date   BIGINT,
    destruction_date  BIGINT,
    revocation_reason TEXT,
    created_at        BIGINT NOT NULL,
    lastused_at       BIGINT,
    creator_kind      TEXT NOT NULL CHECK (creator_kind IN ('user', 'app', 'system')),
    creator_id        TEXT NOT NULL,
    origin            TEXT NOT NULL,
    material          BYTEA,
    pub_key           BYTEA,
    kcv               TEXT,
    external          TEXT,
    never_exportable  BOOLEAN NOT NULL DEFAULT FALSE,
    version           BIGINT NOT NULL DEFAULT 0,
    rotated_at        BIGINT,
    UNIQUE (account_id, name)
);
CREATE INDEX sobjects_group ON sobjects(group_id);
CREATE UNIQUE INDEX sobjects_external_label
    ON sobjects(group_id, lower((external::jsonb #>> '{id,label}')))
    WHERE external IS NOT NULL AND rotated_at IS NULL;
CREATE INDEX sobjects_external_versions
    ON sobjects(group_id, lower((external::jsonb #>> '{id,label}')))
    WHERE external IS NOT NULL;
CREATE INDEX sobjects_deactivation ON sobjects(deactivation_date)
    WHERE deactivation_date IS NOT NULL AND destruction_date IS NULL;

-- The integrity rules of SQLite migration 3, as one trigger function.
CREATE FUNCTION sobjects_integrity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key_ops::jsonb @> '["EXPORT"]' AND NOT OLD.key_ops::jsonb @> '["EXPORT"]' THEN
        RAISE EXCEPTION 'integrity: EXPORT cannot be added to a key after it was created';
    END IF;
    IF NEW.never_exportable IS DISTINCT FROM OLD.never_exportable THEN
        RAISE EXCEPTION 'integrity: never_exportable is fixed when a key is created';
    END IF;
    IF NEW.material IS NOT NULL AND NEW.material IS DISTINCT FROM OLD.material THEN
        RAISE EXCEPTION 'integrity: key material is written only when the key is created';
    END IF;
    IF OLD.destruction_date IS NOT NULL AND NEW.destruction_date IS DISTINCT FROM OLD.destruction_date THEN
        RAISE EXCEPTION 'integrity: a destroyed key stays destroyed';
    END IF;
    IF OLD.compromise_date IS NOT NULL AND NEW.compromise_date IS DISTINCT FROM OLD.compromise_date THEN
        RAISE EXCEPTION 'integrity: a compromised key stays compromised';
    END IF;
    IF OLD.deactivation_date IS NOT NULL
       AND OLD.deactivation_date <= extract(epoch FROM now())::bigint
       AND NEW.deactivation_date IS DISTINCT FROM OLD.deactivation_date THEN
        RAISE EXCEPTION 'integrity: a deactivated key stays deactivated';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER sobjects_integrity BEFORE UPDATE ON sobjects
    FOR EACH ROW EXECUTE FUNCTION sobjects_integrity();

CREATE TABLE sobject_tags (
    kid   TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kid, name)
);

CREATE TABLE key_links (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('copy', 'replacement')),
    source_kid   TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    target_kid   TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    target_group TEXT,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX key_links_source ON key_links(source_kid);
CREATE INDEX key_links_target ON key_links(target_kid);

CREATE TABLE escrow_blobs (
    kid        TEXT PRIMARY KEY REFERENCES sobjects(kid) ON DELETE CASCADE,
    blob       BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE workflow_runs (
    id          TEXT PRIMARY KEY,
    account_id  TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    workflow    TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    principal   TEXT,
    inputs      TEXT,
    status      TEXT NOT NULL,
    log         TEXT NOT NULL DEFAULT '[]',
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    group_id    TEXT,
    output      TEXT,
    error       TEXT,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX workflow_runs_group ON workflow_runs(group_id, workflow, started_at);
CREATE INDEX workflow_runs_account ON workflow_runs(account_id, started_at);

CREATE TABLE audit_events (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id  TEXT,
    at          BIGINT NOT NULL,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_kind TEXT,
    object_id   TEXT,
    outcome     TEXT NOT NULL,
    message     TEXT,
    details     TEXT,
    action_type TEXT NOT NULL DEFAULT 'ADMINISTRATIVE'
);
CREATE INDEX audit_account_time ON audit_events(account_id, at);

CREATE TABLE hsm_ops (
    id          TEXT PRIMARY KEY,
    account_id  TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    group_id    TEXT,
    run_id      TEXT,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    operation   TEXT NOT NULL,
    target      TEXT,
    kid         TEXT,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'interrupted', 'reconciled')),
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX hsm_ops_open ON hsm_ops(group_id, status);

CREATE TABLE rotation_policies (
    kid             TEXT PRIMARY KEY REFERENCES sobjects(kid) ON DELETE CASCADE,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    policy          TEXT NOT NULL,
    owner_kind      TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    set_at          BIGINT NOT NULL,
    next_due        BIGINT,
    last_rotated_at BIGINT,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'failed')),
    failures        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE INDEX rotation_policies_due ON rotation_policies(next_due) WHERE status = 'active';

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
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    next_due   BIGINT,
    last_fire  BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX jobs_due ON jobs(next_due) WHERE NOT paused;

CREATE TABLE fires (
    kind            TEXT NOT NULL CHECK (kind IN ('rotation', 'job')),
    target          TEXT NOT NULL,
    due_at          BIGINT NOT NULL,
    account_id      TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    worker          TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    lease_until     BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'retry', 'succeeded', 'failed')),
    next_attempt_at BIGINT,
    claimed_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    run_id          TEXT,
    error           TEXT,
    PRIMARY KEY (kind, target, due_at)
);
CREATE INDEX fires_retry ON fires(next_attempt_at) WHERE status = 'retry';
CREATE INDEX fires_running ON fires(lease_until) WHERE status = 'running';

CREATE TABLE rotation_steps (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('copy', 'native', 'keyward')),
    target_kid     TEXT NOT NULL,
    group_id       TEXT NOT NULL,
    source_kid     TEXT,
    prior_version  TEXT,
    deactivate_old BOOLEAN NOT NULL DEFAULT FALSE,
    owner_kind     TEXT NOT NULL,
    owner_id       TEXT NOT NULL,
    worker         TEXT NOT NULL,
    lease_until    BIGINT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    new_kid        TEXT,
    error          TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX rotation_steps_pending ON rotation_steps(lease_until) WHERE status = 'pending';
CREATE UNIQUE INDEX rotation_steps_one_per_key ON rotation_steps(target_kid) WHERE status = 'pending';

CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('standard', 'event_grid')),
    workflow        TEXT,
    group_id        TEXT REFERENCES groups(id) ON DELETE CASCADE,
    secret          BYTEA NOT NULL,
    previous_secret BYTEA,
    previous_until  BIGINT,
    owner_kind      TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE webhook_deliveries (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    message_id  TEXT,
    received_at BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    run_id      TEXT,
    error       TEXT,
    UNIQUE (webhook_id, message_id)
);

CREATE TABLE notification_endpoints (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    secret          BYTEA NOT NULL,
    events          TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason TEXT,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    endpoint_id     TEXT NOT NULL REFERENCES notification_endpoints(id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    last_error      TEXT,
    delivered_at    BIGINT,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = 'pending';

CREATE TABLE expiry_notices (
    kid               TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    threshold_days    BIGINT NOT NULL,
    deactivation_date BIGINT NOT NULL,
    sent_at           BIGINT NOT NULL,
    PRIMARY KEY (kid, threshold_days, deactivation_date)
);

CREATE TABLE workflow_scripts (
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    source        TEXT,
    author        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    restored_from BIGINT,
    comment       TEXT,
    PRIMARY KEY (account_id, name, version)
);
