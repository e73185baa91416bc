//! Authorization rules. Accounts are fully isolated; within one, a user's account role
//! (administrator, member, auditor) and group roles (administrator, auditor) decide what they
//! may manage or read. Applications reach only the groups they belong to, and are the only
//! principals that perform cryptographic operations.

use std::collections::HashMap;

use crate::catalog::accounts::{self, AccountRole};
use crate::catalog::apps::{AppGroups, AppPermission};
use crate::catalog::groups::{self, GroupRole};
use crate::catalog::sobjects::Creator;
use crate::catalog::{CatalogError, Conn, apps, users};

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
    /// Applications only: group id → what the application may do with its keys.
    pub app_groups: AppGroups,
    /// The approval request this call carries out, when a quorum approved it: protected
    /// operations run only then, and only those its quorums cover.
    pub approval: Option<Approval>,
}

/// An approved request being carried out, and whose quorums approved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub request_id: String,
    /// The group whose quorum approved it, if a group's policy was asked.
    pub group_id: Option<String>,
    /// Whether the account's quorum approved it.
    pub account: bool,
}

impl Approval {
    /// Whether the group's quorum approved it: an approval by one group's quorum lets
    /// nothing through that another group's quorum protects (a rotation approved for the
    /// source key does not rotate its copies in other protected groups).
    pub fn covers_group(&self, group_id: &str) -> bool {
        self.group_id.as_deref() == Some(group_id)
    }
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
            || self.app_groups.contains_key(group)
    }

    /// Whether an application's permissions in `group` include `p`.
    pub fn app_may(&self, group: &str, p: AppPermission) -> bool {
        self.app_groups.get(group).is_some_and(|ps| ps.contains(&p))
    }

    pub fn can_manage_group(&self, group: &str) -> bool {
        self.is_account_admin() || self.group_roles.get(group) == Some(&GroupRole::Administrator)
    }

    /// Create, import, update and delete keys in `group`: its administrators, and
    /// applications with MANAGE in it.
    pub fn can_manage_keys(&self, group: &str) -> bool {
        self.can_manage_group(group) || self.app_may(group, AppPermission::Manage)
    }

    /// The groups whose objects the caller sees; `None` means every group of the account.
    pub fn visible_groups(&self) -> Option<Vec<String>> {
        if self.reads_whole_account() {
            return None;
        }
        let mut groups: Vec<String> = self.group_roles.keys().cloned().collect();
        groups.extend(self.app_groups.keys().cloned());
        groups.sort();
        groups.dedup();
        Some(groups)
    }
}

/// The access of a user in an account, from the catalog; `None` when the user is no longer
/// a member.
pub async fn of_user(
    c: &mut Conn,
    account: &str,
    principal: Principal,
) -> Result<Option<Access>, CatalogError> {
    let Principal::User { user_id, .. } = &principal else {
        return Ok(None);
    };
    let Some(role) = accounts::member_role(c, account, user_id).await? else {
        return Ok(None);
    };
    let group_roles = groups::roles_of_user(c, account, user_id).await?;
    Ok(Some(Access {
        principal,
        account_id: account.to_string(),
        account_role: Some(role),
        group_roles,
        app_groups: AppGroups::new(),
        approval: None,
    }))
}

/// The access of a principal in an account, read from the catalog, for work done on its
/// behalf outside a request (scheduled rotations, cron jobs, webhook deliveries, resumed
/// rotations): the same roles a request of theirs would have now. `None` when the principal
/// is gone or no longer belongs to the account (a disabled application included).
pub async fn load(
    c: &mut Conn,
    account: &str,
    who: &Creator,
) -> Result<Option<Access>, CatalogError> {
    match who {
        Creator::User(id) => {
            let Some(u) = users::get(c, id).await? else {
                return Ok(None);
            };
            of_user(
                c,
                account,
                Principal::User {
                    user_id: u.id,
                    email: u.email,
                },
            )
            .await
        }
        Creator::App(id) => {
            let Some(app) = apps::get(c, account, id).await?.filter(|a| a.enabled) else {
                return Ok(None);
            };
            Ok(Some(Access {
                principal: Principal::App {
                    app_id: app.id,
                    name: app.name,
                },
                account_id: account.to_string(),
                account_role: None,
                group_roles: Default::default(),
                app_groups: app.groups,
                approval: None,
            }))
        }
        Creator::System(_) => Ok(None),
    }
}
