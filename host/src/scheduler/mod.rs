//! The scheduler inside the daemon: scheduled rotations (FLOWS F25), cron jobs (F31), the
//! resumption of rotations a stopped daemon left half-way, and expiry warnings.
//!
//! What is due is computed from stored state, never from ticks held in memory: a policy is
//! due at the interval after its key's last rotation, a job at its cron time after its last
//! fire. After downtime each missed policy or job therefore runs once, not once per missed
//! tick, and its next time is computed from when it ran.
//!
//! Each fire is claimed with one conditional statement keyed by (policy or job, due time)
//! (`catalog::schedule::claim`), so any number of daemons sharing a catalog run each fire
//! once without a leader. A claim carries a lease and an attempt number; only the current
//! attempt can record the outcome, and a fire whose worker stopped is taken over once its
//! lease expires. A failing fire is retried with backoff without holding up the others, and
//! a rotation policy that keeps failing is marked failed (the key's details say so).
//!
//! [`Scheduler::tick`] does one round and waits for what it started: tests drive it with
//! their own clock. [`Scheduler::run`] ticks until shutdown, sleeping at most
//! [`SchedulerConfig::interval`] (never more than 30 s) between rounds, re-reading the clock
//! each time.

pub mod jobs;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::audit::Event;
use crate::auth;
use crate::catalog::approvals::{ApprovalRequest, Operation, Reviewer, Subjects};
use crate::catalog::apps;
use crate::catalog::notifications::{self, EventType};
use crate::catalog::rotation;
use crate::catalog::schedule::{self, Claim, FireKey, FireKind, FireOutcome, Job};
use crate::catalog::sobjects::{self, Creator};
use crate::catalog::{Catalog, CatalogError};
use crate::keys::{FlowError, KeyError, KeyRef, KeyService, RekeySpec};
use crate::kms::Link;
use crate::time::Clock;
use crate::workflows::{RunRequest, Trigger, Workflows};

/// The longest the scheduler sleeps without looking at the clock again: a suspended machine
/// or a jumped clock is noticed within this.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Run the loop (tests that tick by hand turn it off).
    pub enabled: bool,
    /// Time between rounds (at most [`MAX_SLEEP`]).
    pub interval: Duration,
    /// How long a claim, or a rotation step, stays this daemon's without renewal: a daemon
    /// that stops is replaced after this.
    pub lease_secs: i64,
    /// Attempts of one fire before it is given up (and a rotation policy marked failed).
    pub max_attempts: i64,
    /// Wait before the 2nd, 3rd, ... attempt; the last one repeats.
    pub backoff_secs: Vec<i64>,
    /// Fires run at the same time.
    pub concurrency: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            interval: Duration::from_secs(15),
            lease_secs: 300,
            max_attempts: 5,
            backoff_secs: vec![60, 300, 1800, 7200],
            concurrency: 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl From<sqlx::Error> for SchedulerError {
    fn from(e: sqlx::Error) -> Self {
        SchedulerError::Catalog(e.into())
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    pub rotated: usize,
    pub rotation_failures: usize,
    pub jobs_run: usize,
    pub job_failures: usize,
    /// Rotation steps taken over from a daemon that stopped.
    pub resumed: usize,
    /// Expiry warnings written to the outbox.
    pub expiry_notices: usize,
    /// Approved requests whose operation never reported back, settled as FAILED.
    pub approvals_settled: usize,
}

/// A fire this daemon claimed: a due rotation (`job` is `None`) or a due job.
#[derive(Debug)]
pub struct DueFire {
    pub claim: Claim,
    pub account: String,
    pub job: Option<Job>,
}

pub struct Scheduler {
    catalog: Catalog,
    keys: KeyService,
    workflows: Arc<Workflows>,
    clock: Clock,
    config: SchedulerConfig,
    /// This daemon's id in claims.
    worker: String,
}

/// What a fire's attempt came to, before it is recorded.
enum Attempt {
    Done(Option<String>),
    /// Not this fire's to do now (a resumption is finishing the key's rotation).
    Later(i64),
    Failed {
        run_id: Option<String>,
        error: String,
        permanent: bool,
    },
}

impl Scheduler {
    pub fn new(
        catalog: Catalog,
        keys: KeyService,
        workflows: Arc<Workflows>,
        clock: Clock,
        config: SchedulerConfig,
        worker: String,
    ) -> Scheduler {
        Scheduler {
            catalog,
            keys,
            workflows,
            clock,
            config,
            worker,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Rounds until `shutdown`; a failed round is logged and the next one tried.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let pause = self.config.interval.min(MAX_SLEEP);
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.tick().await {
                Ok(r) if r != TickReport::default() => tracing::info!(?r, "scheduler round"),
                Ok(_) => {}
                Err(e) => tracing::error!("scheduler round failed: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One round: resume abandoned rotations, run due rotations and jobs, send expiry
    /// warnings. Returns when everything it started has finished.
    pub async fn tick(&self) -> Result<TickReport, SchedulerError> {
        let mut report = TickReport {
            resumed: self.keys.resume_abandoned().await?,
            ..TickReport::default()
        };
        let claims = self.claim_due().await?;
        let slots = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency.max(1)));
        let mut running = tokio::task::JoinSet::new();
        for DueFire {
            claim,
            account,
            job,
        } in claims
        {
            let slots = slots.clone();
            let this = self.shallow();
            running.spawn(async move {
                // The lease is kept from the claim on, not from when a slot frees: a fire
                // waiting behind others must not expire and be taken over (and run twice).
                let renew = this.keep_claimed(&claim);
                let _slot = slots.acquire_owned().await.expect("never closed");
                let kind = claim.key.kind;
                let metrics = this.workflows.services().metrics.clone();
                let kind_name = kind.as_str();
                metrics.fire_started(kind_name, this.clock.now() - claim.key.due_at);
                let ok = match job {
                    None => this.fire_rotation(&claim, &account).await,
                    Some(j) => this.fire_job(&claim, &j).await,
                };
                metrics.fire_ended(kind_name, matches!(ok, Ok(true)));
                renew.abort();
                (kind, ok)
            });
        }
        while let Some(done) = running.join_next().await {
            match done {
                Ok((FireKind::Rotation, Ok(true))) => report.rotated += 1,
                Ok((FireKind::Rotation, _)) => report.rotation_failures += 1,
                Ok((FireKind::Job, Ok(true))) => report.jobs_run += 1,
                Ok((FireKind::Job, _)) => report.job_failures += 1,
                Err(e) => tracing::error!("a scheduled fire panicked: {e}"),
            }
        }
        report.expiry_notices = self.expiry_notices().await?;
        report.approvals_settled =
            crate::quorum::settle_unreported(&self.catalog, self.clock.now()).await?;
        Ok(report)
    }

    /// A handle on the same scheduler for a spawned fire.
    fn shallow(&self) -> Scheduler {
        Scheduler {
            catalog: self.catalog.clone(),
            keys: self.keys.clone(),
            workflows: self.workflows.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
            worker: self.worker.clone(),
        }
    }

    /// Claims what is due now (at most 1,000 rotations and 1,000 jobs a round): the fires
    /// this daemon is to run. All claims of a round are one transaction, so a round over
    /// many due policies costs one commit, not one each; a fire another daemon holds is
    /// simply not returned.
    pub async fn claim_due(&self) -> Result<Vec<DueFire>, SchedulerError> {
        let now = self.clock.now();
        let lease_until = now + self.config.lease_secs;
        let mut tx = self.catalog.begin().await?;
        let due_policies = rotation::due_policies(&mut tx, now, 1000).await?;
        let due_jobs = schedule::due_jobs(&mut tx, now, 1000).await?;
        // Every due fire, oldest policies first, with what running it needs: its account,
        // and the job if it is one.
        let mut due: Vec<(FireKey, String, Option<Job>)> = Vec::new();
        for (kid, account, due_at) in due_policies {
            let key = FireKey {
                kind: FireKind::Rotation,
                target: kid,
                due_at,
            };
            due.push((key, account, None));
        }
        for job in due_jobs {
            let Some(due_at) = job.next_due else { continue };
            let key = FireKey {
                kind: FireKind::Job,
                target: job.id.clone(),
                due_at,
            };
            due.push((key, job.account_id.clone(), Some(job)));
        }
        let fires: Vec<(FireKey, &str)> = due
            .iter()
            .map(|(key, account, _)| (key.clone(), account.as_str()))
            .collect();
        // The claims come in the order asked for: a subsequence of `due`.
        let mut claimed = schedule::claim_all(&mut tx, &fires, &self.worker, lease_until, now)
            .await?
            .into_iter()
            .peekable();
        let mut claims = Vec::new();
        for (key, account, job) in due {
            if let Some(claim) = claimed.next_if(|c| c.key == key) {
                claims.push(DueFire {
                    claim,
                    account,
                    job,
                });
            }
        }
        tx.commit().await?;
        Ok(claims)
    }

    /// Keeps a claim's lease while its attempt runs.
    fn keep_claimed(&self, claim: &Claim) -> tokio::task::JoinHandle<()> {
        let (catalog, clock, claim) = (self.catalog.clone(), self.clock.clone(), claim.clone());
        let secs = self.config.lease_secs;
        tokio::spawn(async move {
            let every = Duration::from_secs((secs / 3).max(1) as u64);
            loop {
                tokio::time::sleep(every).await;
                let renewed = async {
                    let mut tx = catalog.begin().await?;
                    let ok = schedule::renew(&mut tx, &claim, clock.now() + secs).await?;
                    tx.commit().await?;
                    Ok::<_, CatalogError>(ok)
                }
                .await;
                match renewed {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!("renewing a scheduler lease: {e}"),
                }
            }
        })
    }

    /// A policy's rotation; `true` when the key was rotated.
    /// The caller keeps the claim's lease while this runs.
    async fn fire_rotation(&self, claim: &Claim, account: &str) -> Result<bool, SchedulerError> {
        let attempt = self.rotate(&claim.key.target, account).await;
        let done = matches!(attempt, Attempt::Done(_));
        self.settle(claim, account, attempt).await?;
        Ok(done)
    }

    async fn rotate(&self, kid: &str, account: &str) -> Attempt {
        let loaded = async {
            let mut conn = self.catalog.conn().await?;
            let policy = rotation::policy_of(&mut conn, kid).await?;
            let key = sobjects::get(&mut conn, account, kid).await?;
            let step = rotation::pending_step_of(&mut conn, kid).await?;
            Ok::<_, CatalogError>((policy, key, step))
        }
        .await;
        let (policy, key, step) = match loaded {
            Ok(v) => v,
            Err(e) => return failed(e.to_string(), false),
        };
        let (Some(policy), Some(key)) = (policy, key) else {
            // The key or its policy went meanwhile: nothing is due.
            return Attempt::Done(None);
        };
        if key.rotated_at.is_some() {
            return Attempt::Done(None);
        }
        if step.is_some() {
            // An interrupted rotation of this key is being finished.
            return Attempt::Later(self.clock.now() + self.config.lease_secs.min(60));
        }
        let access = match self.access_of(account, &policy.owner).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                return failed(
                    "the principal that set the rotation policy no longer belongs to the account; set the policy again".into(),
                    true,
                );
            }
            Err(e) => return failed(e.to_string(), false),
        };
        let spec = RekeySpec {
            key: Some(KeyRef::Kid(kid.to_string())),
            deactivate_rotated_key: policy.policy.deactivate_rotated_key,
            copies: policy.policy.rotate_copied_keys.clone(),
            trigger: Trigger::Schedule,
            ..RekeySpec::default()
        };
        match self.keys.rekey(&access, spec).await {
            Ok(r) => {
                for c in r.copies.iter().filter(|c| c.error.is_some()) {
                    tracing::warn!(copy = %c.kid, "a linked copy did not rotate: {}", c.error.as_deref().unwrap_or_default());
                }
                Attempt::Done(None)
            }
            // The group's quorum protects rotation: the fire asks for approval as the policy's
            // owner would, and the rotation runs when the quorum approves.
            Err(KeyError::ApprovalRequired) => match self
                .ask_for_rotation(
                    account,
                    &key,
                    &policy.owner,
                    policy.policy.deactivate_rotated_key,
                )
                .await
            {
                Ok(()) => Attempt::Done(None),
                Err(e) => failed(e.to_string(), false),
            },
            Err(e) => {
                let permanent = matches!(
                    e,
                    KeyError::Forbidden(_)
                        | KeyError::Rule(_)
                        | KeyError::NotFound(_)
                        | KeyError::Invalid { .. }
                );
                let run_id = match &e {
                    KeyError::Flow(
                        FlowError::Busy { run_id } | FlowError::Unrecorded { run_id, .. },
                    ) => Some(run_id.clone()),
                    KeyError::Flow(FlowError::Run(w)) => w
                        .downcast_ref::<crate::workflows::WorkflowError>()
                        .and_then(run_of),
                    _ => None,
                };
                Attempt::Failed {
                    run_id,
                    error: e.to_string(),
                    permanent,
                }
            }
        }
    }

    /// An approval request for a scheduled rotation, unless one is pending already.
    async fn ask_for_rotation(
        &self,
        account: &str,
        key: &sobjects::SObject,
        owner: &Creator,
        deactivate: bool,
    ) -> Result<(), CatalogError> {
        let requester = match owner {
            Creator::User(id) => Reviewer::User(id.clone()),
            Creator::App(id) => Reviewer::App(id.clone()),
            Creator::System(_) => return Ok(()),
        };
        let body = json!({"kid": key.kid, "deactivate_rotated_key": deactivate}).to_string();
        let now = self.clock.now();
        let mut tx = self.catalog.begin().await?;
        let expiry = crate::quorum::expiry(&mut tx, account).await?;
        let r = ApprovalRequest::new(
            account,
            requester,
            Operation {
                method: "POST".into(),
                path: "/crypto/v1/keys/rekey".into(),
                body: Some(body),
                description: Some(format!("scheduled rotation of {}", key.name)),
            },
            Subjects::group(&key.group_id),
            now,
            expiry,
        );
        let event = Event::system(Some(account), "scheduler", "approval_request.create", now);
        crate::quorum::ask_once(&mut tx, &r, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A cron job's run; `true` when it succeeded.
    /// The caller keeps the claim's lease while this runs.
    async fn fire_job(&self, claim: &Claim, job: &Job) -> Result<bool, SchedulerError> {
        let attempt = self.run_job(job).await;
        let done = matches!(attempt, Attempt::Done(_));
        let finished = !matches!(
            &attempt,
            Attempt::Failed {
                permanent: false,
                ..
            } | Attempt::Later(_)
        ) || claim.attempt >= self.config.max_attempts;
        self.settle(claim, &job.account_id, attempt).await?;
        if finished {
            // Past this fire: the next cron time after now, so missed times are not replayed.
            let now = self.clock.now();
            let next = job.cron.next_after(now.max(claim.key.due_at));
            let mut tx = self.catalog.begin().await?;
            schedule::advance_job(&mut tx, &job.id, claim.key.due_at, next).await?;
            tx.commit().await?;
        }
        Ok(done)
    }

    async fn run_job(&self, job: &Job) -> Attempt {
        let access = match self.access_of(&job.account_id, &job.owner).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                return failed(
                    "the job's owner no longer belongs to the account; create the job again".into(),
                    true,
                );
            }
            Err(e) => return failed(e.to_string(), false),
        };
        // The owner's rights now: a job stops when its owner may no longer start its workflow.
        if let Err(e) = crate::workflows::may_start(&access, &job.workflow, job.group_id.as_deref())
        {
            return failed(format!("the job's owner may no longer run it: {e}"), true);
        }
        let (group, link) = match &job.group_id {
            None => (None, None),
            Some(g) => match self.keys.group(&job.account_id, g).await {
                Ok(group) => match Link::if_linked(&self.catalog, &group) {
                    Ok(link) => (Some(group), link),
                    Err(e) => return failed(e.to_string(), false),
                },
                Err(e) => return failed(e.to_string(), true),
            },
        };
        let exclusive = crate::workflows::exclusive_for(&job.workflow, job.group_id.as_deref())
            .or_else(|| Some(format!("job:{}", job.id)));
        let run = self
            .workflows
            .run(RunRequest {
                workflow: job.workflow.clone(),
                trigger: Trigger::Schedule,
                access,
                group,
                link,
                input: job.input.clone(),
                secrets: vec![],
                pending: None,
                exclusive,
                run_id: None,
            })
            .await;
        match run {
            Ok(o) => Attempt::Done(Some(o.run_id)),
            Err(e) => Attempt::Failed {
                run_id: run_of(&e),
                permanent: matches!(e, crate::workflows::WorkflowError::NotFound(_)),
                error: e.to_string(),
            },
        }
    }

    async fn access_of(
        &self,
        account: &str,
        owner: &Creator,
    ) -> Result<Option<auth::Access>, CatalogError> {
        let mut conn = self.catalog.conn().await?;
        auth::access::load(&mut conn, account, owner).await
    }

    /// Records an attempt's outcome (fenced by the claim) and, for rotations, what it means
    /// for the policy: its failure count, and when retries are used up, its failure, with an
    /// audit event and a notification.
    async fn settle(
        &self,
        claim: &Claim,
        account: &str,
        attempt: Attempt,
    ) -> Result<(), SchedulerError> {
        let now = self.clock.now();
        let outcome = match &attempt {
            Attempt::Done(run_id) => FireOutcome::Succeeded {
                run_id: run_id.clone(),
            },
            Attempt::Later(at) => FireOutcome::Retry {
                at: *at,
                run_id: None,
                error: "waiting for an interrupted rotation of the key to finish".into(),
            },
            Attempt::Failed {
                run_id,
                error,
                permanent,
            } => {
                if *permanent || claim.attempt >= self.config.max_attempts {
                    FireOutcome::Failed {
                        run_id: run_id.clone(),
                        error: error.clone(),
                    }
                } else {
                    FireOutcome::Retry {
                        at: now + self.backoff(claim.attempt),
                        run_id: run_id.clone(),
                        error: error.clone(),
                    }
                }
            }
        };
        let mut tx = self.catalog.begin().await?;
        if !schedule::finish(&mut tx, claim, &outcome, now).await? {
            // Stale: another worker took the fire over, or the rotation itself finished it.
            return Ok(());
        }
        if claim.key.kind == FireKind::Rotation
            && let Attempt::Failed { error, .. } = &attempt
        {
            let stop = matches!(outcome, FireOutcome::Failed { .. });
            let kid = &claim.key.target;
            rotation::policy_failed(&mut tx, kid, error, stop).await?;
            Event::system(Some(account), "scheduler", "key.rotation_failed", now)
                .object("sobject", kid)
                .outcome("failure", error.clone())
                .details(json!({"attempt": claim.attempt, "policy_stopped": stop, "due_at": crate::time::format_dsm(claim.key.due_at)}))
                .write(&mut tx)
                .await?;
            notifications::enqueue(
                &mut tx,
                account,
                EventType::RotationFailed,
                &json!({"kid": kid, "error": error, "attempt": claim.attempt, "policy_stopped": stop}),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn backoff(&self, attempt: i64) -> i64 {
        let i = (attempt.max(1) - 1) as usize;
        self.config
            .backoff_secs
            .get(i)
            .or(self.config.backoff_secs.last())
            .copied()
            .unwrap_or(60)
    }

    /// Writes the warnings of keys whose deactivation date is 30, 7 or 1 days away or has
    /// passed, each once (whichever daemon gets there first).
    async fn expiry_notices(&self) -> Result<usize, SchedulerError> {
        const DAY: i64 = 86_400;
        let now = self.clock.now();
        let keys = {
            let mut conn = self.catalog.conn().await?;
            notifications::expiring(&mut conn, now - DAY, now + 30 * DAY, 1000).await?
        };
        let mut sent = 0;
        for k in keys {
            let left = k.deactivation_date - now;
            let threshold = [0, 1, 7, 30]
                .into_iter()
                .find(|d| left <= d * DAY)
                .unwrap_or(30);
            let mut tx = self.catalog.begin().await?;
            if notifications::notice_once(&mut tx, &k.kid, threshold, k.deactivation_date, now)
                .await?
            {
                let (event, data) = if threshold == 0 {
                    (
                        EventType::Expired,
                        json!({"kid": k.kid, "name": k.name, "group_id": k.group_id,
                        "deactivation_date": crate::time::format_dsm(k.deactivation_date)}),
                    )
                } else {
                    (
                        EventType::NearExpiry,
                        json!({"kid": k.kid, "name": k.name, "group_id": k.group_id,
                        "deactivation_date": crate::time::format_dsm(k.deactivation_date), "days": threshold}),
                    )
                };
                sent += notifications::enqueue(&mut tx, &k.account_id, event, &data, now).await?;
            }
            tx.commit().await?;
        }
        Ok(sent + self.cert_expiry_notices(now).await?)
    }

    /// Warns 30 and 7 days before an application's certificate (or trusted CA) expires,
    /// each once per certificate: DSM only shows the date, and its users ask for warnings.
    async fn cert_expiry_notices(&self, now: i64) -> Result<usize, SchedulerError> {
        const DAY: i64 = 86_400;
        let expiring = {
            let mut conn = self.catalog.conn().await?;
            apps::certs_expiring(&mut conn, now + 30 * DAY, 1000).await?
        };
        let mut sent = 0;
        for app in expiring {
            let left = app.not_after - now;
            let threshold = if left <= 7 * DAY { 7 } else { 30 };
            let mut tx = self.catalog.begin().await?;
            if apps::cert_notice_once(&mut tx, &app.app_id, threshold, app.not_after, now).await? {
                let data = json!({"app_id": app.app_id, "name": app.name, "days": threshold,
                    "cert_not_after": crate::time::format_dsm(app.not_after), "expired": left <= 0});
                Event::system(
                    Some(&app.account_id),
                    "scheduler",
                    "app.cert_near_expiry",
                    now,
                )
                .object("app", &app.app_id)
                .details(data.clone())
                .write(&mut tx)
                .await?;
                sent += notifications::enqueue(
                    &mut tx,
                    &app.account_id,
                    EventType::AppCertNearExpiry,
                    &data,
                    now,
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(sent)
    }
}

fn failed(error: String, permanent: bool) -> Attempt {
    Attempt::Failed {
        run_id: None,
        error,
        permanent,
    }
}

fn run_of(e: &crate::workflows::WorkflowError) -> Option<String> {
    use crate::workflows::WorkflowError as W;
    match e {
        W::Host { run_id, .. }
        | W::Failed { run_id, .. }
        | W::TimedOut { run_id, .. }
        | W::TooManyOperations { run_id, .. }
        | W::Busy { run_id } => Some(run_id.clone()).filter(|r| !r.is_empty()),
        _ => None,
    }
}
