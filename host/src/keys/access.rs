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
    let approved = access
        .approval
        .as_ref()
        .is_some_and(|a| a.covers_group(&group.id));
    if crate::quorum::required(group.approval_policy.as_ref(), what) && !approved {
        return Err(KeyError::ApprovalRequired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::auth::access::Approval;
    use crate::catalog::approvals::{GroupApprovalPolicy, QuorumPolicy};

    fn group(id: &str) -> Group {
        Group {
            id: id.into(),
            account_id: "acct".into(),
            name: id.into(),
            description: None,
            created_at: 0,
            created_by: "u".into(),
            crypto_policy: None,
            key_metadata_policy: None,
            custom_policies: vec![],
            link: None,
            user_export: false,
            approval_policy: Some(GroupApprovalPolicy {
                policy: QuorumPolicy::User("reviewer".into()),
                protect_permissions: vec![Protected::RotateSobjects],
                protect_crypto_operations: false,
                allow_self_approval: false,
            }),
        }
    }

    fn carrying(approval: Option<Approval>) -> Access {
        Access {
            principal: Principal::User {
                user_id: "u".into(),
                email: String::new(),
            },
            account_id: "acct".into(),
            account_role: None,
            group_roles: Default::default(),
            app_groups: Default::default(),
            approval,
        }
    }

    /// An approval counts for the group whose quorum gave it, and for no other: a rotation
    /// approved in the source key's group does not rotate a copy another quorum protects.
    #[test]
    fn an_approval_covers_only_the_group_whose_quorum_gave_it() {
        let rotate = Some(Protected::RotateSobjects);
        let (source, other) = (group("source"), group("other"));
        assert!(matches!(
            approved(&carrying(None), &source, rotate),
            Err(KeyError::ApprovalRequired)
        ));
        let by_source = carrying(Some(Approval {
            request_id: "r".into(),
            group_id: Some("source".into()),
            account: false,
        }));
        assert!(approved(&by_source, &source, rotate).is_ok());
        assert!(matches!(
            approved(&by_source, &other, rotate),
            Err(KeyError::ApprovalRequired)
        ));
        // The account's quorum alone approves no group's protected operation.
        let by_account = carrying(Some(Approval {
            request_id: "r".into(),
            group_id: None,
            account: true,
        }));
        assert!(matches!(
            approved(&by_account, &source, rotate),
            Err(KeyError::ApprovalRequired)
        ));
        // What a group's policy does not protect needs nothing.
        assert!(approved(&carrying(None), &other, Some(Protected::DeleteSobjects)).is_ok());
    }
}
