-- Keyward catalog, version 5: every version of an HSM key by its name, for the
-- 100-version limit checked before each rotation (the unique index holds current keys only,
-- so counting versions scanned the whole group, once per copy of a bulk rotation).
CREATE INDEX sobjects_external_versions
    ON sobjects(group_id, lower(json_extract(external, '$.id.label')))
    WHERE external IS NOT NULL;
