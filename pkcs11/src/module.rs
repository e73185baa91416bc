//! The module's state between calls: its slots (one per configured group, with the
//! application's session once logged in), the caller's sessions and their operations, and
//! the object handles it gave out. The cryptography itself is always a REST call, made
//! outside the lock so that the caller's threads do not wait on each other's round trips.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki_sys::*;

use crate::client::{Client, ClientError, Key};
use crate::config::Config;
use crate::mechanisms::{Mech, Purpose};
use crate::objects::{self, Part};

pub struct Slot {
    pub group_id: String,
    pub label: String,
    /// The application's session token once logged in.
    pub token: Option<String>,
}

/// An operation under way in a session: its key, mechanism, the data given so far, and an
/// answer computed but not yet taken (a buffer that was too small).
#[derive(Clone)]
pub struct Op {
    pub key: Key,
    pub mech: Mech,
    pub data: Vec<u8>,
    pub answer: Option<Vec<u8>>,
}

/// A key wrap asked for: `C_WrapKey`'s length query keeps its answer for the call with the
/// same arguments that takes it.
#[derive(Clone, PartialEq)]
pub struct Wrapped {
    pub mech: Mech,
    pub wrapping: CK_OBJECT_HANDLE,
    pub key: CK_OBJECT_HANDLE,
}

pub struct Session {
    pub slot: usize,
    pub rw: bool,
    pub found: Option<Vec<CK_OBJECT_HANDLE>>,
    pub ops: HashMap<Purpose, Op>,
    pub wrapped: Option<(Wrapped, Vec<u8>)>,
}

pub struct Module {
    pub client: Arc<Client>,
    pub config: Config,
    pub slots: Vec<Slot>,
    pub sessions: HashMap<CK_SESSION_HANDLE, Session>,
    next_session: CK_SESSION_HANDLE,
    /// Object handles: `(kid, part)` each way, stable while the module is loaded.
    handles: HashMap<(String, Part), CK_OBJECT_HANDLE>,
    objects: Vec<(String, Part)>,
    /// The keys as last listed, for their attributes.
    pub keys: HashMap<String, Key>,
}

static MODULE: Mutex<Option<Module>> = Mutex::new(None);

/// The module, or `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub fn lock() -> Result<MutexGuard<'static, Option<Module>>, CK_RV> {
    // A panic in another call leaves nothing half-written that matters here.
    Ok(MODULE.lock().unwrap_or_else(|p| p.into_inner()))
}

pub fn with<T>(f: impl FnOnce(&mut Module) -> Result<T, CK_RV>) -> Result<T, CK_RV> {
    let mut g = lock()?;
    let m = g.as_mut().ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)?;
    f(m)
}

pub fn initialize() -> Result<(), CK_RV> {
    let mut g = lock()?;
    if g.is_some() {
        return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
    }
    let config = Config::load().map_err(|e| {
        eprintln!("keyward-pkcs11: {e}");
        CKR_GENERAL_ERROR
    })?;
    let client = Client::new(&config).map_err(|e| {
        eprintln!("keyward-pkcs11: {e}");
        CKR_GENERAL_ERROR
    })?;
    let slots = if config.slots.is_empty() {
        discover(&config, &client)?
    } else {
        config
            .slots
            .iter()
            .map(|s| Slot {
                group_id: s.group_id.clone(),
                label: s.label.clone().unwrap_or_else(|| s.group_id.clone()),
                token: None,
            })
            .collect()
    };
    *g = Some(Module {
        client: Arc::new(client),
        config,
        slots,
        sessions: HashMap::new(),
        next_session: 1,
        handles: HashMap::new(),
        objects: Vec::new(),
        keys: HashMap::new(),
    });
    Ok(())
}

/// One slot per group the application may use, named after the group: the configuration
/// names none, and the credential is in `api_key_file`.
fn discover(config: &Config, client: &Client) -> Result<Vec<Slot>, CK_RV> {
    let api_key = match config.stored_key() {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            eprintln!("keyward-pkcs11: {e}");
            return Err(CKR_GENERAL_ERROR);
        }
        None => return Err(CKR_GENERAL_ERROR),
    };
    let (token, _) = client
        .login(&api_key)
        .map_err(|e| rv(e, CKR_DEVICE_ERROR))?;
    let groups = client.groups(&token);
    let _ = client.logout(&token);
    Ok(groups
        .map_err(|e| rv(e, CKR_DEVICE_ERROR))?
        .into_iter()
        .map(|(group_id, label)| Slot {
            group_id,
            label,
            token: None,
        })
        .collect())
}

pub fn finalize() -> Result<(), CK_RV> {
    let mut g = lock()?;
    let m = g.take().ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)?;
    for s in &m.slots {
        if let Some(t) = &s.token {
            let _ = m.client.logout(t);
        }
    }
    Ok(())
}

/// What a failed REST call means to a PKCS#11 caller.
pub fn rv(e: ClientError, not_found: CK_RV) -> CK_RV {
    match e {
        ClientError::Unreachable(why) => {
            eprintln!("keyward-pkcs11: {why}");
            CKR_DEVICE_ERROR
        }
        ClientError::Unauthenticated => CKR_USER_NOT_LOGGED_IN,
        // The operation asked for approval (`ops`), or approval was not given.
        ClientError::ApprovalRequired => CKR_FUNCTION_REJECTED,
        ClientError::Forbidden(_) | ClientError::Conflict(_) => CKR_KEY_FUNCTION_NOT_PERMITTED,
        ClientError::NotFound(_) => not_found,
        ClientError::Invalid(_) => CKR_DATA_INVALID,
        ClientError::Daemon(..) => CKR_DEVICE_ERROR,
    }
}

impl Module {
    pub fn slot(&self, id: CK_SLOT_ID) -> Result<&Slot, CK_RV> {
        self.slots.get(id as usize).ok_or(CKR_SLOT_ID_INVALID)
    }

    pub fn session(&mut self, h: CK_SESSION_HANDLE) -> Result<&mut Session, CK_RV> {
        self.sessions.get_mut(&h).ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    pub fn open(&mut self, slot: CK_SLOT_ID, rw: bool) -> Result<CK_SESSION_HANDLE, CK_RV> {
        self.slot(slot)?;
        let h = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            h,
            Session {
                slot: slot as usize,
                rw,
                found: None,
                ops: HashMap::new(),
                wrapped: None,
            },
        );
        Ok(h)
    }

    /// The session's slot's application token (`CKR_USER_NOT_LOGGED_IN` before login).
    pub fn token(&mut self, h: CK_SESSION_HANDLE) -> Result<(Arc<Client>, String), CK_RV> {
        let slot = self.session(h)?.slot;
        let token = self.slots[slot]
            .token
            .clone()
            .ok_or(CKR_USER_NOT_LOGGED_IN)?;
        Ok((self.client.clone(), token))
    }

    pub fn handle(&mut self, kid: &str, part: Part) -> CK_OBJECT_HANDLE {
        if let Some(h) = self.handles.get(&(kid.to_string(), part)) {
            return *h;
        }
        self.objects.push((kid.to_string(), part));
        let h = self.objects.len() as CK_OBJECT_HANDLE;
        self.handles.insert((kid.to_string(), part), h);
        h
    }

    /// The key and part behind a handle, of the session's group.
    pub fn object(
        &mut self,
        session: CK_SESSION_HANDLE,
        h: CK_OBJECT_HANDLE,
    ) -> Result<(Key, Part), CK_RV> {
        self.session(session)?;
        let (kid, part) = self
            .objects
            .get((h as usize).wrapping_sub(1))
            .cloned()
            .ok_or(CKR_OBJECT_HANDLE_INVALID)?;
        let key = self
            .keys
            .get(&kid)
            .cloned()
            .ok_or(CKR_OBJECT_HANDLE_INVALID)?;
        Ok((key, part))
    }

    /// Lists the session's group's keys into handles, those matching `template`.
    pub fn find(
        &mut self,
        session: CK_SESSION_HANDLE,
        keys: Vec<Key>,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
        public_only: bool,
    ) -> Result<(), CK_RV> {
        let mut found = Vec::new();
        for key in keys {
            for part in objects::parts_of(&key) {
                if public_only && part != Part::Public {
                    continue;
                }
                let matches = template.iter().all(|(t, want)| {
                    matches!(objects::attribute(&key, part, *t), objects::Attr::Value(v) if &v == want)
                });
                if matches {
                    found.push(self.handle(&key.kid, part));
                }
            }
            self.keys.insert(key.kid.clone(), key);
        }
        self.session(session)?.found = Some(found);
        Ok(())
    }
}
