//! Whose approval policy an operation needs: the group the path names or whose key the path
//! or body names, and the account's when its policy protects that kind of change (groups'
//! creation and deletion, applications' credentials, the cryptographic policy, notification
//! endpoints, the account's policy itself).

use serde_json::Value;

use crate::catalog::accounts::Account;
use crate::catalog::approvals::{AccountProtected, Subjects};
use crate::catalog::{accounts, groups, sobjects};

use super::super::extract::Caller;
use super::super::{ApiError, ApiResult, AppState};
use super::ApprovalRequestIn;

/// What the account's policy protects among the account-level operations, by path.
fn account_level(method: &str, segments: &[&str], account: &Account) -> bool {
    let Some(p) = &account.approval_policy else {
        return false;
    };
    let protects = |what| crate::quorum::account_required(Some(p), what);
    match segments {
        ["sys", "v1", "groups"] => method == "POST" && protects(AccountProtected::ManageGroups),
        ["sys", "v1", "groups", _] => {
            method == "DELETE" && protects(AccountProtected::ManageGroups)
        }
        ["sys", "v1", "accounts", id] => *id == account.id,
        ["sys", "v1", "apps", _, ..] => protects(AccountProtected::AuthenticationMethods),
        ["sys", "v1", "notification_endpoints", ..] => protects(AccountProtected::LoggingConfig),
        _ => false,
    }
}

/// The policies an operation needs; a 400 naming `operation` when none does.
pub(super) async fn of(
    caller: &Caller,
    state: &AppState,
    req: &ApprovalRequestIn,
    method: &str,
) -> ApiResult<Subjects> {
    let segments: Vec<&str> = req.operation.trim_matches('/').split('/').collect();
    let mut c = state.catalog.conn().await?;
    let account = caller.account();
    let group_id = match segments.as_slice() {
        ["sys", "v1", "groups", gid, ..] => Some(gid.to_string()),
        ["crypto", "v1", "keys", kid, ..] if crate::catalog::is_id(kid) => {
            sobjects::get(&mut c, account, kid)
                .await?
                .map(|o| o.group_id)
        }
        ["crypto", "v1", ..] => {
            let body = req.body.as_ref();
            let key = body.and_then(|b| b.get("key")).or(body);
            let by_kid = key.and_then(|k| k.get("kid")).and_then(Value::as_str);
            let by_name = key.and_then(|k| k.get("name")).and_then(Value::as_str);
            match (by_kid, by_name) {
                (Some(kid), _) => sobjects::get(&mut c, account, kid)
                    .await?
                    .map(|o| o.group_id),
                (None, Some(name)) => sobjects::get_by_name(&mut c, account, name)
                    .await?
                    .map(|o| o.group_id),
                _ => None,
            }
        }
        _ => None,
    };
    let group = match group_id {
        Some(g) => groups::get(&mut c, account, &g)
            .await?
            .filter(|g| caller.access.can_read_group(&g.id)),
        None => None,
    };
    let acct = accounts::get(&mut c, account)
        .await?
        .ok_or_else(|| ApiError::NotFound("account".into()))?;
    let subjects = Subjects {
        group_id: group
            .filter(|g| g.approval_policy.is_some())
            .map(|g| g.id.clone()),
        account: account_level(method, &segments, &acct),
    };
    if subjects.group_id.is_none() && !subjects.account {
        return Err(ApiError::field(
            "operation",
            "no approval policy of the account or of a group of yours protects it: call the operation directly (give the operation's path and body as you would call it)",
        ));
    }
    Ok(subjects)
}
