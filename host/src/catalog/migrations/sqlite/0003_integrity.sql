-- Keyward catalog, version 3: the integrity rules a key manager promises, stated in the schema
-- as well as in the key service, so that no code path can break them; row versions for
-- compare-and-swap writes; the journal of changes made in external key managers.

-- Fixed at creation: true when the key has never permitted EXPORT (PKCS#11
-- CKA_NEVER_EXTRACTABLE). Existing keys: those that do not permit EXPORT now.
ALTER TABLE sobjects ADD COLUMN never_exportable INTEGER NOT NULL DEFAULT 0;
UPDATE sobjects SET never_exportable = NOT EXISTS (SELECT 1 FROM json_each(key_ops) WHERE value = 'EXPORT');

-- Bumped by every write; a write names the version it read.
ALTER TABLE sobjects ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

-- Whether users who manage the group's keys may export them (applications of the group may,
-- for keys that permit EXPORT).
ALTER TABLE groups ADD COLUMN user_export INTEGER NOT NULL DEFAULT 0;

-- Key managers compare key names without case (Azure: `Key01` and `key01` are one key).
DROP INDEX sobjects_external_label;
CREATE UNIQUE INDEX sobjects_external_label
    ON sobjects(group_id, lower(json_extract(external, '$.id.label')))
    WHERE external IS NOT NULL;

-- EXPORT can be removed from a key, never added (PKCS#11 CKA_EXTRACTABLE).
CREATE TRIGGER sobjects_export_never_added BEFORE UPDATE OF key_ops ON sobjects
WHEN EXISTS (SELECT 1 FROM json_each(NEW.key_ops) WHERE value = 'EXPORT')
 AND NOT EXISTS (SELECT 1 FROM json_each(OLD.key_ops) WHERE value = 'EXPORT')
BEGIN
    SELECT RAISE(ABORT, 'integrity: EXPORT cannot be added to a key after it was created');
END;

CREATE TRIGGER sobjects_never_exportable_fixed BEFORE UPDATE OF never_exportable ON sobjects
WHEN NEW.never_exportable IS NOT OLD.never_exportable
BEGIN
    SELECT RAISE(ABORT, 'integrity: never_exportable is fixed when a key is created');
END;

-- Material is written once, when the key is created.
CREATE TRIGGER sobjects_material_written_once BEFORE UPDATE OF material ON sobjects
WHEN NEW.material IS NOT NULL AND NEW.material IS NOT OLD.material
BEGIN
    SELECT RAISE(ABORT, 'integrity: key material is written only when the key is created');
END;

-- KMIP: nothing leaves Destroyed or Compromised, and a deactivation that has happened stays.
CREATE TRIGGER sobjects_destroyed_is_final BEFORE UPDATE OF destruction_date ON sobjects
WHEN OLD.destruction_date IS NOT NULL AND NEW.destruction_date IS NOT OLD.destruction_date
BEGIN
    SELECT RAISE(ABORT, 'integrity: a destroyed key stays destroyed');
END;

CREATE TRIGGER sobjects_compromised_is_final BEFORE UPDATE OF compromise_date ON sobjects
WHEN OLD.compromise_date IS NOT NULL AND NEW.compromise_date IS NOT OLD.compromise_date
BEGIN
    SELECT RAISE(ABORT, 'integrity: a compromised key stays compromised');
END;

CREATE TRIGGER sobjects_deactivation_is_final BEFORE UPDATE OF deactivation_date ON sobjects
WHEN OLD.deactivation_date IS NOT NULL
 AND OLD.deactivation_date <= CAST(strftime('%s', 'now') AS INTEGER)
 AND NEW.deactivation_date IS NOT OLD.deactivation_date
BEGIN
    SELECT RAISE(ABORT, 'integrity: a deactivated key stays deactivated');
END;

-- Changes made in external key managers: the intent is written before the remote call, the
-- outcome after it, so a crash in between leaves a record the next sync reconciles.
CREATE TABLE hsm_ops (
    id          TEXT PRIMARY KEY,
    account_id  TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    group_id    TEXT,
    run_id      TEXT,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    operation   TEXT NOT NULL,              -- create_key, import_key, update_key, delete_key, ...
    target      TEXT,                       -- the key's name in the key manager
    kid         TEXT,                       -- its virtual key, when there is one
    status      TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'interrupted', 'reconciled')),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT                        -- JSON: the remote key id, or the error; never secret
);
CREATE INDEX hsm_ops_open ON hsm_ops(group_id, status);
