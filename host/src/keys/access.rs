//! Who may do what with a key, on top of the account and group roles of `auth::Access`:
//!
//! - manage (update, lifecycle, copy out, delete, HSM-side changes): users who manage the
//!   key's group, and applications of the group for keys that permit APPMANAGEABLE;
//! - use for a cryptographic operation (unwrapping under a KEK included): applications of the
//!   key's group only; users never do cryptography;
//! - export: applications of the key's group, and users who manage the group if the group
//!   allows user export (`user_export`); in both cases only keys that permit EXPORT.

use crate::auth::Access;
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

pub fn may_use(access: &Access, o: &SObject) -> Result<()> {
    if !access.is_app() {
        return Err(KeyError::rule(
            "users do not perform cryptographic operations; applications do",
        ));
    }
    if !access.can_use_keys(&o.group_id) {
        return Err(KeyError::forbidden(
            "the application is not a member of the key's group",
        ));
    }
    Ok(())
}

pub fn may_export(access: &Access, o: &SObject, group: &Group) -> Result<()> {
    if !o.has_op(KeyOp::Export) {
        return Err(KeyError::rule("the key does not permit EXPORT"));
    }
    if access.is_app() {
        return may_use(access, o);
    }
    may_manage_group(access, &o.group_id)?;
    if !group.user_export {
        return Err(KeyError::forbidden(
            "users may export keys only from groups that allow it (the group's user_export); applications of the group may",
        ));
    }
    Ok(())
}
