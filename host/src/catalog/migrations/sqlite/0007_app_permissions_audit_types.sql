-- Keyward catalog, version 7.
--
-- What an application may do with the keys of each of its groups (DSM's app permissions,
-- `add_groups: {group: [permissions]}`). Memberships made before this version keep what they
-- allowed then: every permission.
ALTER TABLE app_groups ADD COLUMN permissions TEXT NOT NULL
    DEFAULT 'ENCRYPT,DECRYPT,WRAPKEY,UNWRAPKEY,SIGN,VERIFY,MACGENERATE,MACVERIFY,DERIVEKEY,AGREEKEY,MASKDECRYPT,EXPORT,MANAGE';

-- The audit log's DSM action type, kept beside the action so that the log can be filtered by
-- it (`GET /sys/v1/logs?action_type=AUTH`). Written by `catalog::audit::insert` from
-- `ActionType::of`; the rows before this version are classified here by the same rule.
ALTER TABLE audit_events ADD COLUMN action_type TEXT NOT NULL DEFAULT 'ADMINISTRATIVE';
UPDATE audit_events SET action_type = CASE
    WHEN action LIKE 'session.%' THEN 'AUTH'
    WHEN action IN ('key.encrypt', 'key.decrypt', 'key.sign', 'key.verify', 'key.wrapkey',
                    'key.unwrapkey', 'key.export') THEN 'CRYPTOOPERATION'
    WHEN action LIKE 'workflow.%' THEN 'CUSTOM'
    ELSE 'ADMINISTRATIVE'
END;
