//! Quorum approval rules, as pure functions over DSM's shapes (`catalog::approvals`): whether
//! a policy is well formed, whether the approvals given satisfy it, who may review, and
//! whether a group's or an account's policy protects an operation. The key service asks
//! [`required`] before each protected change, the API [`account_required`] before each
//! protected account change; the approval requests (`api::approvals`) use [`Deciders`], the
//! policies a request needs as they are now.
//!
//! | policy                              | satisfied by                                 |
//! |-------------------------------------|----------------------------------------------|
//! | `{"user": id}` / `{"app": id}`      | that principal's approval                    |
//! | `{"quorum": {n, members}}`          | `n` of the members satisfied (members nest)  |
//!
//! A requester never counts for their own request unless the policy allows it. [`ask`] writes
//! a new request for the API; [`ask_once`] one for automation (a scheduled rotation, a
//! workflow run), which asks again only when nothing the same is pending.

use crate::audit::Event;
use crate::auth::access::Access;
use crate::catalog::approvals::{
    self, AccountApprovalPolicy, AccountProtected, ApprovalRequest, GroupApprovalPolicy, Protected,
    QuorumPolicy, Reviewer, Status,
};
use crate::catalog::{Catalog, CatalogError, Conn, accounts, groups, notifications};

/// The deepest nesting of quorums accepted.
const MAX_DEPTH: usize = 4;
/// The most members one quorum may have.
const MAX_MEMBERS: usize = 32;

/// Whether a policy is usable: each quorum has members, `1 <= n <= members`, ids are ids.
pub fn check(policy: &QuorumPolicy) -> Result<(), String> {
    fn walk(p: &QuorumPolicy, depth: usize) -> Result<(), String> {
        match p {
            QuorumPolicy::User(id) | QuorumPolicy::App(id) => {
                if crate::catalog::is_id(id) {
                    Ok(())
                } else {
                    Err(format!("'{id}' is not a user or application id"))
                }
            }
            QuorumPolicy::Quorum(q) => {
                if depth >= MAX_DEPTH {
                    return Err(format!("quorums nest at most {MAX_DEPTH} deep"));
                }
                if q.members.is_empty() || q.members.len() > MAX_MEMBERS {
                    return Err(format!("a quorum has 1 to {MAX_MEMBERS} members"));
                }
                if q.n == 0 || q.n as usize > q.members.len() {
                    return Err(format!(
                        "n must be between 1 and the number of members ({})",
                        q.members.len()
                    ));
                }
                q.members.iter().try_for_each(|m| walk(m, depth + 1))
            }
        }
    }
    walk(policy, 0)
}

/// Whether `approvers` satisfy `policy` (the requester excluded by the caller).
pub fn satisfied(policy: &QuorumPolicy, approvers: &[Reviewer]) -> bool {
    match policy {
        QuorumPolicy::User(id) => approvers
            .iter()
            .any(|a| matches!(a, Reviewer::User(u) if u == id)),
        QuorumPolicy::App(id) => approvers
            .iter()
            .any(|a| matches!(a, Reviewer::App(x) if x == id)),
        QuorumPolicy::Quorum(q) => {
            q.members.iter().filter(|m| satisfied(m, approvers)).count() >= q.n as usize
        }
    }
}

/// Whether `who` is named anywhere in the policy (only they review).
pub fn names(policy: &QuorumPolicy, who: &Reviewer) -> bool {
    match policy {
        QuorumPolicy::Quorum(q) => q.members.iter().any(|m| names(m, who)),
        _ => satisfied(policy, std::slice::from_ref(who)),
    }
}

/// Every user and application the policy names, once each, in order.
pub fn reviewers(policy: &QuorumPolicy) -> Vec<Reviewer> {
    fn walk(p: &QuorumPolicy, out: &mut Vec<Reviewer>) {
        let named = match p {
            QuorumPolicy::Quorum(q) => return q.members.iter().for_each(|m| walk(m, out)),
            QuorumPolicy::User(id) => Reviewer::User(id.clone()),
            QuorumPolicy::App(id) => Reviewer::App(id.clone()),
        };
        if !out.contains(&named) {
            out.push(named);
        }
    }
    let mut out = vec![];
    walk(policy, &mut out);
    out
}

/// Whether the policy asks reviewers who are users for their password.
pub fn requires_password(policy: &QuorumPolicy) -> bool {
    match policy {
        QuorumPolicy::Quorum(q) => q.require_password || q.members.iter().any(requires_password),
        _ => false,
    }
}

/// What an operation on a group's keys needs: approval when the group's policy protects it.
/// `None` for a cryptographic operation's check is `protect_crypto_operations`.
pub fn required(policy: Option<&GroupApprovalPolicy>, what: Option<Protected>) -> bool {
    let Some(p) = policy else {
        return false;
    };
    match what {
        Some(op) => p.protect_permissions.contains(&op),
        None => p.protect_crypto_operations,
    }
}

/// What an account-level change needs: approval when the account's policy protects it.
pub fn account_required(policy: Option<&AccountApprovalPolicy>, what: AccountProtected) -> bool {
    policy.is_some_and(|p| p.protects(what))
}

/// Whether `access` may make an account-level change now: the account's policy does not
/// protect it, or an approved request carries it out. Read from the catalog, not a cache:
/// another daemon may have set the policy a moment ago.
pub async fn account_allows(
    c: &mut Conn,
    access: &Access,
    what: AccountProtected,
) -> Result<bool, CatalogError> {
    if access.approval.as_ref().is_some_and(|a| a.account) {
        return Ok(true);
    }
    let policy = accounts::get(c, &access.account_id)
        .await?
        .and_then(|a| a.approval_policy);
    Ok(!account_required(policy.as_ref(), what))
}

/// One policy a request needs, and whether its requester may count for it.
#[derive(Debug, Clone)]
struct Decider {
    policy: QuorumPolicy,
    allow_self: bool,
}

/// The policies a request needs, as they are now: its group's, its account's, or both. A
/// policy removed since (which took the quorum itself) no longer decides.
#[derive(Debug, Clone, Default)]
pub struct Deciders(Vec<Decider>);

impl Deciders {
    pub async fn of(c: &mut Conn, r: &ApprovalRequest) -> Result<Deciders, CatalogError> {
        let mut out = Vec::new();
        if let Some(g) = &r.group_id
            && let Some(p) = groups::get(c, &r.account_id, g)
                .await?
                .and_then(|g| g.approval_policy)
        {
            out.push(Decider {
                policy: p.policy,
                allow_self: p.allow_self_approval,
            });
        }
        if r.account_policy
            && let Some(p) = accounts::get(c, &r.account_id)
                .await?
                .and_then(|a| a.approval_policy)
        {
            out.push(Decider {
                policy: p.policy,
                allow_self: p.allow_self_approval,
            });
        }
        Ok(Deciders(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first policy (the group's when there is one), to show.
    pub fn first(&self) -> Option<&QuorumPolicy> {
        self.0.first().map(|d| &d.policy)
    }

    /// Whether `who` reviews for any of the policies.
    pub fn names(&self, who: &Reviewer) -> bool {
        self.0.iter().any(|d| names(&d.policy, who))
    }

    /// Whether `who`, the requester, may decide on their own request.
    pub fn lets_requester_decide(&self, who: &Reviewer) -> bool {
        self.0.iter().any(|d| d.allow_self && names(&d.policy, who))
    }

    /// Everyone who reviews, once each.
    pub fn reviewers(&self) -> Vec<Reviewer> {
        let mut out: Vec<Reviewer> = Vec::new();
        for r in self.0.iter().flat_map(|d| reviewers(&d.policy)) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    pub fn requires_password(&self) -> bool {
        self.0.iter().any(|d| requires_password(&d.policy))
    }

    /// Whether `approvers` satisfy every policy; the requester counts only where the policy
    /// allows it.
    pub fn satisfied(&self, approvers: &[Reviewer], requester: &Reviewer) -> bool {
        !self.0.is_empty()
            && self.0.iter().all(|d| {
                let counted: Vec<Reviewer> = approvers
                    .iter()
                    .filter(|a| d.allow_self || *a != requester)
                    .cloned()
                    .collect();
                satisfied(&d.policy, &counted)
            })
    }
}

/// How long a new request of `account` waits for its quorum.
pub async fn expiry(c: &mut Conn, account: &str) -> Result<i64, CatalogError> {
    Ok(accounts::get(c, account)
        .await?
        .map_or(approvals::EXPIRY_SECS, |a| a.request_expiry()))
}

/// Writes a request for automation unless the same requester has the same operation pending
/// (a cron fire or a sync every few minutes asks once); the request that waits.
pub async fn ask_once(
    c: &mut Conn,
    r: &ApprovalRequest,
    event: Event,
    now: i64,
) -> Result<ApprovalRequest, CatalogError> {
    let pending = approvals::list(c, &r.account_id, Some(Status::Pending)).await?;
    if let Some(same) = pending.into_iter().find(|p| {
        p.requester == r.requester
            && p.method == r.method
            && p.operation == r.operation
            && p.body == r.body
            && now <= p.expires_at
    }) {
        return Ok(same);
    }
    ask(c, r, event).await?;
    Ok(r.clone())
}

/// How long an approved request's operation may take to report back before it is taken for
/// interrupted: far longer than any one API call runs.
pub const UNREPORTED_SECS: i64 = 3_600;

/// Approved requests whose operation never reported back (the daemon carrying it out
/// stopped) become FAILED, saying so, with an audit event each. The operation is never run
/// again: whether it took effect before the stop is for the requester to look at, and to ask
/// again if not. Returns how many were settled.
pub async fn settle_unreported(catalog: &Catalog, now: i64) -> Result<usize, CatalogError> {
    let stale = {
        let mut c = catalog.conn().await?;
        approvals::unreported(&mut c, now - UNREPORTED_SECS).await?
    };
    let mut settled = 0;
    for r in stale {
        let body = serde_json::json!({"code": "Interrupted", "message":
            "the daemon carrying the approved operation out stopped before it reported back: check whether it took effect, and ask again if not"});
        let sealed = catalog.seal(
            &approvals::result_context(&r.id),
            body.to_string().as_bytes(),
        );
        let mut tx = catalog.begin().await?;
        if approvals::settle_unreported(&mut tx, &r.id, &sealed).await? {
            Event::system(
                Some(&r.account_id),
                "approvals",
                "approval_request.execute",
                now,
            )
            .object("approval_request", &r.id)
            .details(serde_json::json!({"method": r.method, "operation": r.operation}))
            .outcome("failure", "interrupted before it reported back")
            .write(&mut tx)
            .await?;
            settled += 1;
        }
        tx.commit().await?;
    }
    Ok(settled)
}

/// Writes a new request with its audit event and its `approval.requested` notification.
pub async fn ask(c: &mut Conn, r: &ApprovalRequest, event: Event) -> Result<(), CatalogError> {
    approvals::insert(c, r).await?;
    event
        .object("approval_request", &r.id)
        .details(
            serde_json::json!({"method": r.method, "operation": r.operation, "group_id": r.group_id,
            "account_policy": r.account_policy}),
        )
        .write(c)
        .await?;
    notifications::enqueue(
        c,
        &r.account_id,
        notifications::EventType::ApprovalRequested,
        &serde_json::json!({"request_id": r.id, "group_id": r.group_id, "account_policy": r.account_policy,
            "method": r.method, "operation": r.operation, "description": r.description}),
        r.created_at,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::approvals::Quorum;

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";
    const C: &str = "00000000-0000-4000-8000-00000000000c";

    fn two_of_three() -> QuorumPolicy {
        QuorumPolicy::Quorum(Quorum {
            n: 2,
            members: vec![
                QuorumPolicy::User(A.into()),
                QuorumPolicy::User(B.into()),
                QuorumPolicy::App(C.into()),
            ],
            require_password: false,
        })
    }

    #[test]
    fn n_of_the_members_satisfy_a_quorum_and_nobody_else_counts() {
        let p = two_of_three();
        assert!(check(&p).is_ok());
        assert!(!satisfied(&p, &[Reviewer::User(A.into())]));
        assert!(satisfied(
            &p,
            &[Reviewer::User(A.into()), Reviewer::App(C.into())]
        ));
        // A user with the application's id is not the application.
        assert!(!satisfied(
            &p,
            &[Reviewer::User(A.into()), Reviewer::User(C.into())]
        ));
        assert!(names(&p, &Reviewer::User(B.into())));
        assert!(!names(&p, &Reviewer::App(A.into())));
    }

    #[test]
    fn nested_quorums_and_bad_policies() {
        let nested = QuorumPolicy::Quorum(Quorum {
            n: 2,
            members: vec![two_of_three(), QuorumPolicy::User(C.into())],
            require_password: true,
        });
        assert!(check(&nested).is_ok());
        assert!(requires_password(&nested));
        assert!(!satisfied(
            &nested,
            &[Reviewer::User(A.into()), Reviewer::User(B.into())]
        ));
        assert!(satisfied(
            &nested,
            &[
                Reviewer::User(A.into()),
                Reviewer::User(B.into()),
                Reviewer::User(C.into())
            ]
        ));
        for bad in [
            QuorumPolicy::Quorum(Quorum {
                n: 0,
                members: vec![QuorumPolicy::User(A.into())],
                require_password: false,
            }),
            QuorumPolicy::Quorum(Quorum {
                n: 2,
                members: vec![QuorumPolicy::User(A.into())],
                require_password: false,
            }),
            QuorumPolicy::Quorum(Quorum {
                n: 1,
                members: vec![],
                require_password: false,
            }),
            QuorumPolicy::User("alice".into()),
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dsm_json_reads_as_the_policy() {
        let gp: GroupApprovalPolicy = serde_json::from_value(serde_json::json!({
            "quorum": {"n": 1, "members": [{"user": A}]},
            "protect_permissions": ["ROTATE_SOBJECTS", "EXPORT_SOBJECTS"],
            "protect_crypto_operations": true
        }))
        .unwrap();
        assert!(required(Some(&gp), Some(Protected::RotateSobjects)));
        assert!(!required(Some(&gp), Some(Protected::DeleteSobjects)));
        assert!(required(Some(&gp), None));
        assert!(!required(None, None));
        let back = serde_json::to_value(&gp).unwrap();
        assert_eq!(back["quorum"]["members"][0]["user"], A);
    }
}
