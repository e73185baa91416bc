//! `keys::*`: the group's virtual keys, through the key service, which checks every write
//! against the run's caller and the same rules as the API. Scripts name keys by id and pass
//! back the key maps `hsm::` functions returned; the service trusts only what the key
//! manager said of them in this run.

use std::sync::Arc;

use rhai::{Array, Dynamic, FnPtr, ImmutableString, Map, Module, NativeCallContext};
use serde_json::{Value, json};

use crate::catalog::sobjects::RemoteState;
use crate::keys::{Deletion, Pending};
use crate::kms::{KmsError, Link};
use crate::plugins::kms::{KeyRef, RemoteKey};

use super::shapes::{item_json, object_json};
use super::{Backup, ByokBlob, HostError, HostErrorKind, RhaiResult, RunContext, Secret, invalid};
use crate::workflows::values::{from_json, to_json};

const ADOPT_BATCH: usize = 100;

/// What `keys::set_remote_state` reads of a soft-deleted key's map.
#[derive(Debug, Default, serde::Deserialize)]
struct DeletedIn {
    deleted: Option<i64>,
    scheduled_purge: Option<i64>,
    recovery_id: Option<String>,
}

pub fn module(ctx: &Arc<RunContext>) -> Module {
    let mut m = Module::new();
    let c = ctx.clone();
    m.set_native_fn("linked", move || {
        let refs = c.keys(c.services.keys.linked(c.scope()?))?;
        let mut out = Map::new();
        for r in refs {
            out.insert(
                r.external.name().into(),
                from_json(&json!({
                    "kid": r.kid, "name": r.name, "enabled": r.enabled,
                    "state": r.external.state, "source": r.external.source,
                })),
            );
        }
        Ok(out)
    });
    let c = ctx.clone();
    m.set_native_fn("adopt", move |names: Array| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        adopt(&c, names)
    });
    let c = ctx.clone();
    m.set_native_fn(
        "adopt_listed",
        move |nc: NativeCallContext, filter: FnPtr| adopt_listed(&c, &nc, filter),
    );
    let c = ctx.clone();
    m.set_native_fn("record", move |remote: Map, backup: Backup| {
        let remote = c.remembered(&remote)?;
        record(&c, &remote, Some(&backup))
    });
    let c = ctx.clone();
    m.set_native_fn("record", move |remote: Map| {
        let remote = c.remembered(&remote)?;
        record(&c, &remote, None)
    });
    let c = ctx.clone();
    m.set_native_fn("record_rotation", move |remote: Map, backup: Backup| {
        super::rotation::record_rotation(&c, &remote, Some(&backup))
    });
    let c = ctx.clone();
    m.set_native_fn("record_rotation", move |remote: Map| {
        super::rotation::record_rotation(&c, &remote, None)
    });
    let c = ctx.clone();
    m.set_native_fn("find_virtual", move |name: ImmutableString| {
        let scope = c.scope()?;
        let Some(kid) = c.keys(c.services.keys.virtual_named(scope, &name))? else {
            return Ok(Dynamic::UNIT);
        };
        let o = c.keys(c.services.keys.in_group(scope, &kid))?;
        Ok(from_json(&object_json(&o, c.services.clock.now())))
    });
    let c = ctx.clone();
    m.set_native_fn(
        "adopt_version",
        move |kid: ImmutableString, remote: Map, backup: Backup| {
            c.check_kid(&kid)?;
            let remote = c.remembered(&remote)?;
            let new = c.keys(c.services.keys.adopt_version(
                c.scope()?,
                &kid,
                &remote,
                Some(backup.blob.as_slice()),
            ))?;
            if let Some(n) = &new {
                c.log(&format!(
                    "version {} of {} was made outside Keyward: recorded as key {n}",
                    remote.version, remote.name
                ));
            }
            Ok(new.map(Dynamic::from).unwrap_or(Dynamic::UNIT))
        },
    );
    let c = ctx.clone();
    m.set_native_fn("rotate_copies", move |blob: ByokBlob| {
        super::rotation::rotate_copies(&c, blob.material())
    });
    let c = ctx.clone();
    m.set_native_fn("rotate_copies", move |material: Secret| {
        if !material.plain_ok {
            return Err(HostError::new(
                HostErrorKind::Denied,
                "this key material may not leave unwrapped (its key does not permit EXPORT)",
            )
            .throw());
        }
        super::rotation::rotate_copies(&c, super::hsm::material_of(&material.material))
    });
    let c = ctx.clone();
    m.set_native_fn("save", move |remote: Map| {
        let remote = c.remembered(&remote)?;
        save(&c, &remote)
    });
    let c = ctx.clone();
    m.set_native_fn("get", move |kid: ImmutableString| {
        let o = c.keys(c.services.keys.in_group(c.scope()?, &kid))?;
        Ok(from_json(&object_json(&o, c.services.clock.now())))
    });
    let c = ctx.clone();
    m.set_native_fn(
        "set_remote_state",
        move |kid: ImmutableString, state: ImmutableString, details: Map| {
            c.check_kid(&kid)?;
            let state = RemoteState::parse(&state).ok_or_else(|| {
                invalid(format!(
                    "'{state}' is not a remote state (Active, Disabled, SoftDeleted, Purged)"
                ))
            })?;
            // The map `hsm::delete_key` and `hsm::list_deleted` return, or an empty one.
            let d: DeletedIn = serde_json::from_value(to_json(&Dynamic::from_map(details)))
                .map_err(|e| {
                    invalid(format!(
                        "the soft-deletion details are not as hsm:: returns them: {e}"
                    ))
                })?;
            let deletion = Deletion {
                deleted: d.deleted,
                scheduled_purge: d.scheduled_purge,
                recovery_id: d.recovery_id,
            };
            let changed = c.keys(c.services.keys.set_remote_state(
                c.scope()?,
                &kid,
                state,
                &deletion,
            ))?;
            if changed {
                c.log(&format!("{kid} is now {} in the HSM", state.as_str()));
            }
            Ok(changed)
        },
    );
    let c = ctx.clone();
    m.set_native_fn("refresh", move |kid: ImmutableString, remote: Map| {
        c.check_kid(&kid)?;
        let remote = c.remembered(&remote)?;
        c.keys(c.services.keys.refresh(c.scope()?, &kid, &remote))?;
        c.log(&format!("refreshed {kid} from the HSM"));
        Ok(())
    });
    let c = ctx.clone();
    m.set_native_fn("escrow", move |kid: ImmutableString| {
        c.check_kid(&kid)?;
        let scope = c.scope()?;
        let o = c.keys(c.services.keys.in_group(scope, &kid))?;
        let blob = c.keys(c.services.keys.escrow(scope, &kid))?;
        c.log(&format!("took the escrowed backup of {kid}"));
        Ok(Backup {
            blob: Arc::new(blob),
            name: o.external_name().unwrap_or_default().to_string(),
        })
    });
    let c = ctx.clone();
    m.set_native_fn("put_escrow", move |kid: ImmutableString, backup: Backup| {
        c.check_kid(&kid)?;
        c.keys(c.services.keys.put_escrow(c.scope()?, &kid, &backup.blob))?;
        c.log(&format!("escrowed a backup of {kid}"));
        Ok(())
    });
    let c = ctx.clone();
    m.set_native_fn("remove", move |kid: ImmutableString| {
        c.check_kid(&kid)?;
        c.keys(c.services.keys.remove_virtual(c.scope()?, &kid))?;
        c.log(&format!(
            "removed virtual key {kid} and its escrowed backup"
        ));
        Ok(())
    });
    let c = ctx.clone();
    m.set_native_fn("reconcile", move || {
        let report = c.keys(c.services.keys.reconcile(c.scope()?))?;
        if report.reconciled + report.completed.len() + report.released.len() > 0 {
            c.log(&format!(
                "reconciled: {} reservations completed, {} released, {} keys refreshed, {} interrupted changes settled",
                report.completed.len(),
                report.released.len(),
                report.refreshed.len(),
                report.reconciled
            ));
        }
        Ok(from_json(&serde_json::to_value(&report).unwrap_or_default()))
    });
    m
}

/// `keys::record`: completes the run's reserved key with what the HSM made of it. The
/// reservation stays the run's until the record succeeds.
fn record(c: &RunContext, remote: &RemoteKey, backup: Option<&Backup>) -> RhaiResult<String> {
    let pending = match &*c.pending.lock().unwrap() {
        Some(Pending::New(p)) => p.clone(),
        _ => {
            return Err(invalid(
                "this run has no new key to record (or it was recorded already)",
            ));
        }
    };
    let kid = c.keys(c.services.keys.record_new(
        c.scope()?,
        &pending,
        remote,
        backup.map(|b| b.blob.as_slice()),
    ))?;
    *c.pending.lock().unwrap() = None;
    c.log(&format!("recorded virtual key {kid} for {}", remote.id));
    *c.recorded.lock().unwrap() = Some(kid.clone());
    Ok(kid)
}

/// `keys::save`: saves the run's pending change now that the HSM made it.
fn save(c: &RunContext, remote: &RemoteKey) -> RhaiResult<String> {
    let pending = match c.pending.lock().unwrap().take() {
        Some(Pending::Change(p)) => p,
        _ => {
            return Err(invalid(
                "this run has no key change to save (or it was saved already)",
            ));
        }
    };
    let kid = c.keys(c.services.keys.save_change(c.scope()?, &pending, remote))?;
    *c.recorded.lock().unwrap() = Some(kid.clone());
    c.log(&format!("saved the change of {kid}"));
    Ok(kid)
}

/// A key and its backup, or why they could not be fetched.
type Fetched = Result<(RemoteKey, Vec<u8>), KmsError>;

/// Fetches keys (key and backup) with bounded concurrency and stores each as a virtual key
/// with its escrowed backup, in batches, while more are being fetched. Keys that already
/// have a virtual key are skipped; ones that fail are reported, not fatal.
struct Adopter<'a> {
    c: &'a RunContext,
    link: Link,
    slots: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<(String, Fetched)>,
    batch: Vec<(RemoteKey, Vec<u8>)>,
    added: Vec<String>,
    failed: Vec<Value>,
}

impl<'a> Adopter<'a> {
    fn new(c: &'a RunContext) -> RhaiResult<Adopter<'a>> {
        Ok(Adopter {
            link: c.link()?.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(c.concurrency)),
            tasks: tokio::task::JoinSet::new(),
            batch: Vec::new(),
            added: Vec::new(),
            failed: Vec::new(),
            c,
        })
    }

    /// Starts fetching a key (on the runtime: it proceeds while the caller does other work).
    fn spawn(&mut self, name: String) {
        let slots = self.slots.clone();
        let kms = self.c.services.kms.clone();
        let link = self.link.clone();
        let _guard = self.c.rt.enter();
        // The task is the daemon's work (another thread frees it), not the script's memory.
        let _uncounted = crate::workflows::memory::Paused::new();
        self.tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("never closed");
            let key = KeyRef {
                name: name.clone(),
                version: None,
            };
            let got = async {
                let remote = kms.get_key(&link, &key).await?;
                let backup = kms.backup_key(&link, &name).await?;
                Ok::<_, KmsError>((remote, backup))
            }
            .await;
            (name, got)
        });
    }

    fn take(&mut self, (name, got): (String, Fetched)) {
        match got {
            Ok(v) => self.batch.push(v),
            Err(e) => {
                self.c.progress.add("failed", 1);
                self.failed
                    .push(json!({"name": name, "error": HostError::from(e)}));
            }
        }
    }

    async fn store(&mut self) -> Result<(), HostError> {
        let scope = self
            .c
            .scope()
            .map_err(|_| HostError::new(HostErrorKind::Invalid, "this run has no linked group"))?;
        let kids = self
            .c
            .services
            .keys
            .adopt(scope, std::mem::take(&mut self.batch))
            .await?;
        self.c.progress.add("added", kids.len() as i64);
        self.added.extend(kids);
        Ok(())
    }

    /// Collects what has been fetched so far and stores full batches.
    async fn collect_ready(&mut self) -> Result<(), HostError> {
        while let Some(joined) = self.tasks.try_join_next() {
            self.take(joined.expect("fetch task does not panic"));
        }
        if self.batch.len() >= ADOPT_BATCH {
            self.store().await?;
        }
        Ok(())
    }

    /// Waits for every fetch and stores the rest.
    async fn finish(mut self) -> Result<(Vec<String>, Vec<Value>), HostError> {
        while let Some(joined) = self.tasks.join_next().await {
            self.take(joined.expect("fetch task does not panic"));
            if self.batch.len() >= ADOPT_BATCH {
                self.store().await?;
            }
        }
        if !self.batch.is_empty() {
            self.store().await?;
        }
        Ok((self.added, self.failed))
    }
}

fn adopted_map(added: Vec<String>, failed: Vec<Value>) -> Map {
    let mut out = Map::new();
    out.insert(
        "added".into(),
        Dynamic::from_array(added.into_iter().map(Dynamic::from).collect()),
    );
    out.insert(
        "failed".into(),
        Dynamic::from_array(failed.iter().map(from_json).collect()),
    );
    out
}

/// `keys::adopt(names)`: adopts the named keys.
fn adopt(c: &Arc<RunContext>, names: Vec<String>) -> RhaiResult<Map> {
    let total = names.len();
    let mut adopter = Adopter::new(c)?;
    for name in names {
        adopter.spawn(name);
    }
    let (added, failed) = c.block(adopter.finish())?.map_err(HostError::throw)?;
    c.log(&format!(
        "adopted {} of {total} keys ({} failed)",
        added.len(),
        failed.len()
    ));
    Ok(adopted_map(added, failed))
}

/// `keys::adopt_listed(filter)`: lists every key of the HSM and, while the pages come in,
/// adopts those without a virtual key that `filter` accepts, so fetching overlaps listing.
/// Returns `#{listed, added, failed}`.
fn adopt_listed(c: &Arc<RunContext>, nc: &NativeCallContext, filter: FnPtr) -> RhaiResult<Map> {
    let mut adopter = Adopter::new(c)?;
    let known = c.keys(c.services.keys.known_names(c.scope()?))?;
    let mut listed = Array::new();
    let mut page: Option<String> = None;
    loop {
        let p = c.kms(c.services.kms.list_keys(&adopter.link, page.as_deref()))?;
        for item in &p.items {
            // What a sync needs of every key (a whole item each would make a large HSM's
            // sync hold far more than its memory budget).
            let mut seen = Map::new();
            seen.insert("name".into(), item.name.clone().into());
            seen.insert("enabled".into(), item.properties.enabled.into());
            listed.push(Dynamic::from_map(seen));
            let d = from_json(&item_json(item));
            if !known.contains(&item.name.to_lowercase())
                && filter.call_within_context::<bool>(nc, (d,))?
            {
                adopter.spawn(item.name.clone());
            }
        }
        c.progress.set("seen", listed.len() as i64);
        c.block(adopter.collect_ready())?
            .map_err(HostError::throw)?;
        match p.next {
            Some(next) => page = Some(next),
            None => break,
        }
    }
    c.log(&format!("listed {} keys", listed.len()));
    let (added, failed) = c.block(adopter.finish())?.map_err(HostError::throw)?;
    c.log(&format!(
        "adopted {} keys ({} failed)",
        added.len(),
        failed.len()
    ));
    let mut out = adopted_map(added, failed);
    out.insert("listed".into(), Dynamic::from_array(listed));
    Ok(out)
}
