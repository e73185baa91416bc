//! Authorization rules. Accounts are fully isolated; within one, a user's account role
//! (administrator, member, auditor) and group roles (administrator, auditor) decide what they
//! may manage or read. Applications reach only the groups they belong to, and are the only
//! principals that perform cryptographic operations.

use std::collections::HashMap;

use crate::catalog::accounts::AccountRole;
use crate::catalog::groups::GroupRole;

use super::Principal;

/// What the caller of one request may do in its account.
#[derive(Debug, Clone)]
pub struct Access {
    pub principal: Principal,
    pub account_id: String,
    /// Users only.
    pub account_role: Option<AccountRole>,
    /// Users only: group id → role.
    pub group_roles: HashMap<String, GroupRole>,
    /// Applications only.
    pub app_groups: Vec<String>,
}

impl Access {
    pub fn is_app(&self) -> bool {
        matches!(self.principal, Principal::App { .. })
    }

    pub fn is_account_admin(&self) -> bool {
        self.account_role == Some(AccountRole::Administrator)
    }

    /// Administrators and auditors see everything in the account (auditors read only).
    pub fn reads_whole_account(&self) -> bool {
        matches!(
            self.account_role,
            Some(AccountRole::Administrator | AccountRole::Auditor)
        )
    }

    pub fn can_manage_account(&self) -> bool {
        self.is_account_admin()
    }

    pub fn can_read_audit_log(&self) -> bool {
        self.reads_whole_account()
    }

    pub fn can_create_group(&self) -> bool {
        matches!(
            self.account_role,
            Some(AccountRole::Administrator | AccountRole::Member)
        )
    }

    pub fn can_read_group(&self, group: &str) -> bool {
        self.reads_whole_account()
            || self.group_roles.contains_key(group)
            || self.app_groups.iter().any(|g| g == group)
    }

    pub fn can_manage_group(&self, group: &str) -> bool {
        self.is_account_admin() || self.group_roles.get(group) == Some(&GroupRole::Administrator)
    }

    /// Create, import, update and delete keys in `group`.
    pub fn can_manage_keys(&self, group: &str) -> bool {
        self.can_manage_group(group) || self.app_groups.iter().any(|g| g == group)
    }

    /// Cryptographic operations with the keys of `group`: applications of the group only.
    pub fn can_use_keys(&self, group: &str) -> bool {
        self.is_app() && self.app_groups.iter().any(|g| g == group)
    }

    /// The groups whose objects the caller sees; `None` means every group of the account.
    pub fn visible_groups(&self) -> Option<Vec<String>> {
        if self.reads_whole_account() {
            return None;
        }
        let mut groups: Vec<String> = self.group_roles.keys().cloned().collect();
        groups.extend(self.app_groups.iter().cloned());
        groups.sort();
        groups.dedup();
        Some(groups)
    }
}
