//! Who may do what with a key, on top of the account and group roles of `auth::Access`:
//!
//! - manage (update, lifecycle, copy out, delete, HSM-side changes): users who manage the
//!   key's group, and applications with MANAGE in the group for keys that permit
//!   APPMANAGEABLE;
//! - use for a cryptographic operation (unwrapping under a KEK included): applications of the
//!   key's group whose permissions there include the operation; users never do cryptography;
//! - export: applications with EXPORT in the key's group, and users who manage the group if
//!   the group allows user export (`user_export`); in both cases only keys that permit EXPORT.
//!
//! The key's own operations are checked by the caller (`usable_for`): both must allow.
//!
//! On top of all that, a group's quorum approval policy may protect an operation: it then
//! runs only as an approved request carries it out ([`approved`]), whichever path asks
//! (the API, a workflow script, a scheduled rotation).

use crate::auth::Access;
use crate::catalog::approvals::Protected;
use crate::catalog::apps::AppPermission;
use crate::catalog::groups::Group;
use crate::catalog::sobjects::{KeyOp, SObject};

use super::error::{KeyError, Result};

pub fn may_manage_group(access: &Access, group: &str) -> Result<()> {
    if access.can_manage_keys(group) {
        Ok(())
    } else {
        Err(KeyError::forbidden("you may not manage keys in that group"))
    }
}

pub fn may_manage(access: &Access, o: &SObject) -> Result<()> {
    may_manage_group(access, &o.group_id)?;
    if access.is_app() && !o.has_op(KeyOp::AppManageable) {
        return Err(KeyError::forbidden(
            "the key does not permit APPMANAGEABLE: applications may not manage it",
        ));
    }
    Ok(())
}

pub fn may_use(access: &Access, o: &SObject, op: KeyOp) -> Result<()> {
    if !access.is_app() {
        return Err(KeyError::rule(
            "users do not perform cryptographic operations; applications do",
        ));
    }
    let Some(permissions) = access.app_groups.get(&o.group_id) else {
        return Err(KeyError::forbidden(
            "the application is not a member of the key's group",
        ));
    };
    let needed = AppPermission::for_op(op).ok_or_else(|| {
        KeyError::Internal(format!("{} is not a cryptographic operation", op.as_str()))
    })?;
    if !permissions.contains(&needed) {
        return Err(KeyError::forbidden(format!(
            "the application does not have the {} permission in the key's group",
            needed.as_str()
        )));
    }
    Ok(())
}

pub fn may_export(access: &Access, o: &SObject, group: &Group) -> Result<()> {
    if !o.has_op(KeyOp::Export) {
        return Err(KeyError::rule("the key does not permit EXPORT"));
    }
    if access.is_app() {
        return may_use(access, o, KeyOp::Export);
    }
    may_manage_group(access, &o.group_id)?;
    if !group.user_export {
        return Err(KeyError::forbidden(
            "users may export keys only from groups that allow it (the group's user_export); applications of the group may",
        ));
    }
    Ok(())
}

/// Refuses an operation the group's approval policy protects (`what`; `None`: a
/// cryptographic operation) unless an approved request carries it out.
pub fn approved(access: &Access, group: &Group, what: Option<Protected>) -> Result<()> {
    if crate::quorum::required(group.approval_policy.as_ref(), what) && access.approval.is_none() {
        return Err(KeyError::ApprovalRequired);
    }
    Ok(())
}
