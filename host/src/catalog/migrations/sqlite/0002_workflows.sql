-- Keyward catalog, version 2: workflow runs know their group and keep their result; a key of
-- an external key manager is represented by at most one virtual key per group.

ALTER TABLE workflow_runs ADD COLUMN group_id TEXT;
ALTER TABLE workflow_runs ADD COLUMN output TEXT;        -- JSON, secrets removed
ALTER TABLE workflow_runs ADD COLUMN error TEXT;
CREATE INDEX workflow_runs_group ON workflow_runs(group_id, workflow, started_at);
CREATE INDEX workflow_runs_account ON workflow_runs(account_id, started_at);

-- The remote key name of a virtual key (`external.id.label`), unique within its group, so a
-- sync can never add the same key twice, whatever runs concurrently.
CREATE UNIQUE INDEX sobjects_external_label
    ON sobjects(group_id, json_extract(external, '$.id.label'))
    WHERE external IS NOT NULL;
