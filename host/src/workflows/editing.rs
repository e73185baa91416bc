//! An account's own versions of workflow scripts. Account administrators put a version (it
//! is compiled first: a script with a syntax error is refused with its line and column, and
//! the version in use stays), restore any earlier version, or go back to the daemon's
//! script; each is a new version in the catalog with its author and time, audited in the
//! same transaction, and in use by the account's next run. Other accounts never see them:
//! the store looks a script up by the run's account.

use std::sync::Arc;

use serde_json::json;

use crate::audit::Event;
use crate::auth::Access;
use crate::catalog::CatalogError;
use crate::catalog::workflow_scripts::{self, NewVersion, ScriptVersion};

use super::store::valid_name;
use super::{CompileProblem, Workflows};

/// The largest script an account can put.
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// 403: only account administrators edit scripts.
    #[error("only account administrators edit workflow scripts")]
    Forbidden,
    /// 400: the name cannot be a workflow's.
    #[error("workflow names are 1 to 64 lower-case letters, digits, '_' or '-'")]
    InvalidName,
    /// 400: larger than [`MAX_SOURCE_BYTES`].
    #[error("the script is larger than {MAX_SOURCE_BYTES} bytes")]
    TooLarge,
    /// 400: the script does not compile.
    #[error("the script does not compile: {0}")]
    Compile(CompileProblem),
    /// 404
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<sqlx::Error> for ScriptError {
    fn from(e: sqlx::Error) -> Self {
        ScriptError::Catalog(e.into())
    }
}

/// A version to add.
struct Change<'a> {
    name: &'a str,
    source: Option<String>,
    restored_from: Option<i64>,
    comment: Option<&'a str>,
    action: &'static str,
}

fn author(access: &Access) -> String {
    format!("{}:{}", access.principal.kind(), access.principal.id())
}

fn admin(access: &Access) -> Result<(), ScriptError> {
    if access.is_account_admin() {
        Ok(())
    } else {
        Err(ScriptError::Forbidden)
    }
}

fn name_ok(name: &str) -> Result<(), ScriptError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ScriptError::InvalidName)
    }
}

impl Workflows {
    /// Loads every account's versions in use (at start). A stored version that no longer
    /// compiles (an engine upgrade) is reported and the daemon's script runs instead.
    pub async fn load_account_scripts(&self) -> Result<usize, CatalogError> {
        let current = {
            let mut conn = self.services.catalog.conn().await?;
            workflow_scripts::current_all(&mut conn).await?
        };
        let n = current.len();
        self.install_versions(current);
        Ok(n)
    }

    /// Brings this daemon's copy of an account's scripts up to the catalog's versions in
    /// use: another daemon sharing the catalog may have put, restored or reverted one. Read
    /// before each run and each listing, so a change on any daemon is what the next run on
    /// every daemon uses.
    pub async fn refresh_account_scripts(&self, account: &str) -> Result<(), CatalogError> {
        let current = {
            let mut conn = self.services.catalog.conn().await?;
            workflow_scripts::current_of(&mut conn, account).await?
        };
        let changed: Vec<_> = current
            .into_iter()
            .filter(|v| self.store.account_version(&v.account_id, &v.name) != Some(v.version))
            .collect();
        if !changed.is_empty() {
            self.install_versions(changed);
        }
        Ok(())
    }

    fn install_versions(&self, versions: Vec<workflow_scripts::ScriptVersion>) {
        let engine = self.base_engine(None, None);
        for v in versions {
            let compiled = match &v.source {
                None => Ok(None),
                Some(src) => self
                    .store
                    .compile_account(&engine, &v.name, src)
                    .map(|ast| Some((ast, Arc::from(src.as_str())))),
            };
            if let Err(p) = &compiled {
                tracing::error!(
                    account = %v.account_id,
                    workflow = %v.name,
                    version = v.version,
                    "an account's workflow script no longer compiles; the daemon's runs instead: {p}"
                );
            }
            self.store
                .install(&v.account_id, &v.name, v.version, compiled);
        }
    }

    /// Compiles a script without storing it.
    pub fn check_script(&self, name: &str, source: &str) -> Result<(), ScriptError> {
        name_ok(name)?;
        if source.len() > MAX_SOURCE_BYTES {
            return Err(ScriptError::TooLarge);
        }
        self.store
            .compile_account(&self.base_engine(None, None), name, source)
            .map(|_| ())
            .map_err(ScriptError::Compile)
    }

    /// Puts the account's own version of `name`.
    pub async fn put_script(
        &self,
        access: &Access,
        name: &str,
        source: String,
        comment: Option<&str>,
    ) -> Result<ScriptVersion, ScriptError> {
        admin(access)?;
        self.add_version(
            access,
            Change {
                name,
                source: Some(source),
                restored_from: None,
                comment,
                action: "workflow_script.put",
            },
        )
        .await
    }

    /// Makes an earlier version the one in use again (as a new version copying it).
    pub async fn restore_script(
        &self,
        access: &Access,
        name: &str,
        version: i64,
    ) -> Result<ScriptVersion, ScriptError> {
        admin(access)?;
        let old = self.script_version(access, name, version).await?;
        self.add_version(
            access,
            Change {
                name,
                source: old.source,
                restored_from: Some(version),
                comment: None,
                action: "workflow_script.restore",
            },
        )
        .await
    }

    /// Goes back to the daemon's script.
    pub async fn revert_script(
        &self,
        access: &Access,
        name: &str,
    ) -> Result<ScriptVersion, ScriptError> {
        admin(access)?;
        let versions = self.script_versions(access, name).await?;
        if versions.first().is_none_or(|v| v.source.is_none()) {
            return Err(ScriptError::NotFound(format!(
                "the account has no version of its own of '{name}'"
            )));
        }
        self.add_version(
            access,
            Change {
                name,
                source: None,
                restored_from: None,
                comment: None,
                action: "workflow_script.revert",
            },
        )
        .await
    }

    /// The account's versions of `name`, newest first.
    pub async fn script_versions(
        &self,
        access: &Access,
        name: &str,
    ) -> Result<Vec<ScriptVersion>, ScriptError> {
        name_ok(name)?;
        let mut conn = self.services.catalog.conn().await?;
        Ok(workflow_scripts::versions(&mut conn, &access.account_id, name).await?)
    }

    pub async fn script_version(
        &self,
        access: &Access,
        name: &str,
        version: i64,
    ) -> Result<ScriptVersion, ScriptError> {
        name_ok(name)?;
        let mut conn = self.services.catalog.conn().await?;
        workflow_scripts::get(&mut conn, &access.account_id, name, version)
            .await?
            .ok_or_else(|| ScriptError::NotFound(format!("'{name}' has no version {version}")))
    }

    async fn add_version(
        &self,
        access: &Access,
        change: Change<'_>,
    ) -> Result<ScriptVersion, ScriptError> {
        name_ok(change.name)?;
        let compiled = match &change.source {
            None => None,
            Some(src) => {
                if src.len() > MAX_SOURCE_BYTES {
                    return Err(ScriptError::TooLarge);
                }
                let ast = self
                    .store
                    .compile_account(&self.base_engine(None, None), change.name, src)
                    .map_err(ScriptError::Compile)?;
                Some((ast, Arc::<str>::from(src.as_str())))
            }
        };
        let now = self.services.clock.now();
        let author = author(access);
        let mut tx = self.services.catalog.begin().await?;
        let version = workflow_scripts::insert(
            &mut tx,
            &NewVersion {
                account_id: &access.account_id,
                name: change.name,
                source: change.source.as_deref(),
                author: &author,
                created_at: now,
                restored_from: change.restored_from,
                comment: change.comment,
            },
        )
        .await?;
        Event::new(
            Some(&access.account_id),
            &access.principal,
            change.action,
            now,
        )
        .object("workflow_script", change.name)
        .details(json!({
            "version": version.version,
            "restored_from": change.restored_from,
            "uses": if change.source.is_some() { "account" } else { "daemon" },
        }))
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        self.store.install(
            &access.account_id,
            change.name,
            version.version,
            Ok(compiled),
        );
        tracing::info!(
            account = %access.account_id,
            workflow = change.name,
            version = version.version,
            action = change.action,
            "workflow script changed"
        );
        Ok(version)
    }
}
