//! Cron jobs: any workflow on a cron schedule in a time zone (a nightly sync of a group, for
//! example), created, listed, paused, resumed and deleted through the API, each change with
//! its audit event. A job acts as the principal that created it, with the roles that
//! principal has when it fires.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::audit::Event;
use crate::auth::Access;
use crate::cadence::Cron;
use crate::catalog::schedule::{self, Fire, FireKind, Job};
use crate::catalog::{Catalog, CatalogError, groups, new_id};
use crate::time::Clock;
use crate::workflows::Workflows;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// 400.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 409.
    #[error("{0}")]
    NameTaken(String),
    /// 500.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Catalog(e.into())
    }
}

fn invalid(field: &str, message: impl Into<String>) -> JobError {
    JobError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub workflow: String,
    pub group_id: Option<String>,
    pub cron: String,
    /// IANA time zone of `cron`; default UTC.
    pub time_zone: Option<String>,
    /// The workflow's `input` (an object; never put secrets here: it is stored as is).
    pub input: Option<Value>,
    pub paused: bool,
}

#[derive(Clone)]
pub struct Jobs {
    catalog: Catalog,
    workflows: Arc<Workflows>,
    clock: Clock,
}

impl Jobs {
    pub fn new(catalog: Catalog, workflows: Arc<Workflows>, clock: Clock) -> Jobs {
        Jobs {
            catalog,
            workflows,
            clock,
        }
    }

    pub async fn create(&self, access: &Access, spec: NewJob) -> Result<Job, JobError> {
        let name = spec.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(invalid("name", "must be 1 to 128 characters"));
        }
        if self
            .workflows
            .source(&access.account_id, &spec.workflow)
            .is_err()
        {
            // A name that refers to nothing, as an unknown id does.
            return Err(JobError::NotFound(format!(
                "workflow: there is no workflow named '{}' (GET /sys/v1/workflows lists them)",
                spec.workflow
            )));
        }
        if [
            "generate",
            "import",
            "byok_copy",
            "update",
            "rotate",
            "rotate_to_keyward",
            "rotate_copies",
        ]
        .contains(&spec.workflow.as_str())
        {
            // Not something a schedule may run: refused as a permission, whatever the form.
            return Err(JobError::Forbidden(format!(
                "workflow: '{}' runs for one key request of the API and cannot be scheduled; schedule rotations with a key's rotation_policy",
                spec.workflow
            )));
        }
        self.may_manage(access, spec.group_id.as_deref()).await?;
        crate::workflows::may_start(access, &spec.workflow, spec.group_id.as_deref())
            .map_err(|e| JobError::Forbidden(e.to_string()))?;
        let cron = Cron::parse(&spec.cron, spec.time_zone.as_deref().unwrap_or("UTC"))
            .map_err(|e| invalid("cron", e.0))?;
        let input = spec.input.unwrap_or_else(|| json!({}));
        if !input.is_object() {
            return Err(invalid("input", "must be a JSON object"));
        }
        let now = self.clock.now();
        let job = Job {
            id: new_id(),
            account_id: access.account_id.clone(),
            name,
            workflow: spec.workflow,
            group_id: spec.group_id,
            next_due: (!spec.paused).then(|| cron.next_after(now)).flatten(),
            cron,
            input,
            owner: crate::keys::creator(&access.principal),
            paused: spec.paused,
            last_fire: None,
            created_at: now,
        };
        let mut tx = self.catalog.begin().await?;
        schedule::insert_job(&mut tx, &job).await.map_err(|e| {
            if e.is_unique_violation() {
                JobError::NameTaken(format!("a job named '{}' exists in this account", job.name))
            } else {
                e.into()
            }
        })?;
        self.event(access, "job.create", &job.id, json!({"name": job.name, "workflow": job.workflow,
            "group_id": job.group_id, "cron": job.cron.expression(), "time_zone": job.cron.time_zone()}))
            .write(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(job)
    }

    /// The account's jobs the caller may see (all for account administrators and auditors,
    /// else those of groups the caller can read).
    pub async fn list(&self, access: &Access) -> Result<Vec<Job>, JobError> {
        let mut conn = self.catalog.conn().await?;
        Ok(schedule::jobs_of(&mut conn, &access.account_id)
            .await?
            .into_iter()
            .filter(|j| visible(access, j))
            .collect())
    }

    pub async fn get(&self, access: &Access, id: &str) -> Result<Job, JobError> {
        if !crate::catalog::is_id(id) {
            return Err(invalid("id", format!("'{id}' is not a valid job id")));
        }
        let mut conn = self.catalog.conn().await?;
        schedule::job(&mut conn, &access.account_id, id)
            .await?
            .filter(|j| visible(access, j))
            .ok_or_else(|| JobError::NotFound(format!("no job {id}")))
    }

    /// Pauses or resumes a job; a resumed job is next due at its first cron time from now.
    pub async fn set_paused(
        &self,
        access: &Access,
        id: &str,
        paused: bool,
    ) -> Result<Job, JobError> {
        let job = self.get(access, id).await?;
        self.may_manage(access, job.group_id.as_deref()).await?;
        let next = (!paused)
            .then(|| job.cron.next_after(self.clock.now()))
            .flatten();
        let mut tx = self.catalog.begin().await?;
        schedule::set_paused(&mut tx, &access.account_id, id, paused, next).await?;
        self.event(
            access,
            if paused { "job.pause" } else { "job.resume" },
            id,
            json!({"name": job.name}),
        )
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        self.get(access, id).await
    }

    pub async fn delete(&self, access: &Access, id: &str) -> Result<(), JobError> {
        let job = self.get(access, id).await?;
        self.may_manage(access, job.group_id.as_deref()).await?;
        let mut tx = self.catalog.begin().await?;
        schedule::delete_job(&mut tx, &access.account_id, id).await?;
        self.event(access, "job.delete", id, json!({"name": job.name}))
            .write(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The job's latest fires, newest first.
    pub async fn history(
        &self,
        access: &Access,
        id: &str,
        limit: u32,
    ) -> Result<Vec<Fire>, JobError> {
        let job = self.get(access, id).await?;
        let mut conn = self.catalog.conn().await?;
        Ok(schedule::history(
            &mut conn,
            &access.account_id,
            FireKind::Job,
            &[job.id],
            limit,
        )
        .await?)
    }

    /// Jobs for a group are managed by who manages its keys; jobs for no group by account
    /// administrators.
    async fn may_manage(&self, access: &Access, group: Option<&str>) -> Result<(), JobError> {
        match group {
            None if access.is_account_admin() => Ok(()),
            None => Err(JobError::Forbidden(
                "only account administrators manage jobs that belong to no group".into(),
            )),
            Some(g) => {
                if !crate::catalog::is_id(g) {
                    return Err(invalid(
                        "group_id",
                        format!("'{g}' is not a valid group id"),
                    ));
                }
                let mut conn = self.catalog.conn().await?;
                if groups::get(&mut conn, &access.account_id, g)
                    .await?
                    .is_none()
                {
                    return Err(JobError::NotFound(format!("no group {g}")));
                }
                if access.can_manage_keys(g) {
                    Ok(())
                } else {
                    Err(JobError::Forbidden(
                        "you may not manage that group's keys".into(),
                    ))
                }
            }
        }
    }

    fn event(&self, access: &Access, action: &str, id: &str, details: Value) -> Event {
        Event::new(
            Some(&access.account_id),
            &access.principal,
            action,
            self.clock.now(),
        )
        .object("job", id)
        .details(details)
    }
}

fn visible(access: &Access, j: &Job) -> bool {
    match &j.group_id {
        None => access.reads_whole_account(),
        Some(g) => access.can_read_group(g),
    }
}
