//! Where workflow scripts come from, most specific first: an account's own version (put
//! through the API, kept in the catalog, see `workflows::editing`), the daemon's override
//! directory, and the ones shipped in the binary (the repository's `workflows/*.rhai`). An
//! edited override file is recompiled on the next run; one that fails to compile is reported
//! with its line and column while the previous version keeps serving. An account's versions
//! are compiled before they are stored, so a broken one never replaces a working one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rhai::{AST, Engine, EvalAltResult, Module, Position, Scope, Shared};

use super::WorkflowError;

/// The scripts shipped with Keyward (name → source).
pub const SHIPPED: &[(&str, &str)] = &[
    ("common", include_str!("../../../workflows/common.rhai")),
    (
        "test_connection",
        include_str!("../../../workflows/test_connection.rhai"),
    ),
    ("sync", include_str!("../../../workflows/sync.rhai")),
    ("generate", include_str!("../../../workflows/generate.rhai")),
    ("import", include_str!("../../../workflows/import.rhai")),
    (
        "byok_copy",
        include_str!("../../../workflows/byok_copy.rhai"),
    ),
    ("update", include_str!("../../../workflows/update.rhai")),
    (
        "soft_delete",
        include_str!("../../../workflows/soft_delete.rhai"),
    ),
    ("recover", include_str!("../../../workflows/recover.rhai")),
    ("restore", include_str!("../../../workflows/restore.rhai")),
    ("purge", include_str!("../../../workflows/purge.rhai")),
    ("delete", include_str!("../../../workflows/delete.rhai")),
    ("rotate", include_str!("../../../workflows/rotate.rhai")),
    (
        "rotate_to_keyward",
        include_str!("../../../workflows/rotate_to_keyward.rhai"),
    ),
    (
        "rotate_copies",
        include_str!("../../../workflows/rotate_copies.rhai"),
    ),
    ("sync_key", include_str!("../../../workflows/sync_key.rhai")),
];

/// A script that did not compile.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct CompileProblem {
    pub workflow: String,
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for CompileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.path, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.path, self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Where the version in use came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Shipped,
    Override,
    /// The account's own version.
    Account,
}

/// Size and modification time of an override file: a change means recompile.
type Stamp = (u64, Option<SystemTime>);

struct Entry {
    origin: Origin,
    /// Stamp of the override file this AST came from.
    stamp: Option<Stamp>,
    ast: Arc<AST>,
    source: Arc<str>,
    /// The override file (by stamp) that failed to compile, and why.
    problem: Option<(Stamp, CompileProblem)>,
}

/// A script ready to run.
#[derive(Clone)]
pub struct Script {
    pub name: String,
    pub origin: Origin,
    pub ast: Arc<AST>,
}

/// What the API shows about a workflow.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScriptInfo {
    pub name: String,
    /// The version in use.
    pub origin: Origin,
    /// Whether Keyward ships a version of it.
    pub shipped: bool,
    /// The override file, when the override directory has one.
    pub override_path: Option<String>,
    /// Why the override file is not in use, if it does not compile.
    pub problem: Option<CompileProblem>,
    /// The account's version in use, when the account has its own.
    pub account_version: Option<i64>,
}

/// An account's version in use of one script.
struct AccountEntry {
    version: i64,
    /// `None`: the account went back to the daemon's script (or its version no longer
    /// compiles, see `problem`).
    script: Option<(Arc<AST>, Arc<str>)>,
    problem: Option<CompileProblem>,
}

pub struct ScriptStore {
    override_dir: Option<PathBuf>,
    entries: Mutex<HashMap<String, Entry>>,
    /// (account id, name) → the account's version in use.
    accounts: Mutex<HashMap<(String, String), AccountEntry>>,
}

/// Workflow and module names: lower-case letters, digits, `_` and `-`, so a name can never
/// reach outside the workflow directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn shipped_source(name: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| (m.len(), m.modified().ok()))
}

fn compile(engine: &Engine, name: &str, path: &str, source: &str) -> Result<AST, CompileProblem> {
    engine.compile(source).map_err(|e| {
        let pos = e.position();
        CompileProblem {
            workflow: name.to_string(),
            path: path.to_string(),
            line: pos.line(),
            column: pos.position(),
            message: e.err_type().to_string(),
        }
    })
}

impl ScriptStore {
    pub fn new(override_dir: Option<PathBuf>) -> ScriptStore {
        ScriptStore {
            override_dir,
            entries: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Compiles an account's version of a script (without storing it).
    pub fn compile_account(
        &self,
        engine: &Engine,
        name: &str,
        source: &str,
    ) -> Result<AST, CompileProblem> {
        compile(engine, name, &format!("account:{name}.rhai"), source)
    }

    /// Puts an account's version in use: `script` is its compiled source, `None` to go back to
    /// the daemon's script. An older version than the one in use is ignored (two writers
    /// finishing out of order).
    pub fn install(
        &self,
        account: &str,
        name: &str,
        version: i64,
        script: Result<Option<(AST, Arc<str>)>, CompileProblem>,
    ) {
        let mut accounts = self.accounts.lock().unwrap();
        let key = (account.to_string(), name.to_string());
        if accounts.get(&key).is_some_and(|e| e.version >= version) {
            return;
        }
        let (script, problem) = match script {
            Ok(s) => (s.map(|(ast, src)| (Arc::new(ast), src)), None),
            Err(p) => (None, Some(p)),
        };
        accounts.insert(
            key,
            AccountEntry {
                version,
                script,
                problem,
            },
        );
    }

    /// The number of the account's version of `name` this daemon has installed.
    pub fn account_version(&self, account: &str, name: &str) -> Option<i64> {
        self.accounts
            .lock()
            .unwrap()
            .get(&(account.to_string(), name.to_string()))
            .map(|e| e.version)
    }

    /// The account's version in use of `name`, if it has one with a source.
    fn account_script(&self, account: Option<&str>, name: &str) -> Option<(Arc<AST>, Arc<str>)> {
        let account = account?;
        self.accounts
            .lock()
            .unwrap()
            .get(&(account.to_string(), name.to_string()))
            .and_then(|e| e.script.clone())
    }

    pub fn override_dir(&self) -> Option<&Path> {
        self.override_dir.as_deref()
    }

    fn override_path(&self, name: &str) -> Option<PathBuf> {
        self.override_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.rhai")))
    }

    /// The script to run for `name` in `account`: the account's version, else the override
    /// file if it compiles (recompiled when it changed), else the last version that compiled,
    /// else the shipped one.
    pub fn script(
        &self,
        engine: &Engine,
        account: Option<&str>,
        name: &str,
    ) -> Result<Script, WorkflowError> {
        if !valid_name(name) {
            return Err(WorkflowError::NotFound(name.to_string()));
        }
        if let Some((ast, _)) = self.account_script(account, name) {
            return Ok(Script {
                name: name.to_string(),
                origin: Origin::Account,
                ast,
            });
        }
        self.daemon_script(engine, name)
    }

    /// The daemon's script for `name` (override file or shipped).
    fn daemon_script(&self, engine: &Engine, name: &str) -> Result<Script, WorkflowError> {
        let override_path = self.override_path(name);
        let current = override_path.as_deref().and_then(stamp);
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.get(name);
        let up_to_date = match (entry, current) {
            (Some(e), Some(s)) => {
                e.stamp == Some(s) || e.problem.as_ref().is_some_and(|(p, _)| *p == s)
            }
            (Some(e), None) => e.origin == Origin::Shipped && e.problem.is_none(),
            (None, _) => false,
        };
        if !up_to_date {
            let next = self.load(engine, name, override_path.as_deref(), current, entry)?;
            entries.insert(name.to_string(), next);
        }
        let e = &entries[name];
        Ok(Script {
            name: name.to_string(),
            origin: e.origin.clone(),
            ast: e.ast.clone(),
        })
    }

    /// Builds the entry for `name` from the file system (and the previous entry).
    fn load(
        &self,
        engine: &Engine,
        name: &str,
        path: Option<&Path>,
        current: Option<Stamp>,
        previous: Option<&Entry>,
    ) -> Result<Entry, WorkflowError> {
        let shipped = || -> Result<Entry, WorkflowError> {
            let source =
                shipped_source(name).ok_or_else(|| WorkflowError::NotFound(name.into()))?;
            let ast = compile(engine, name, &format!("shipped:{name}.rhai"), source)
                .map_err(WorkflowError::Compile)?;
            Ok(Entry {
                origin: Origin::Shipped,
                stamp: None,
                ast: Arc::new(ast),
                source: source.into(),
                problem: None,
            })
        };
        let (Some(path), Some(stamp)) = (path, current) else {
            return shipped();
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            WorkflowError::Compile(CompileProblem {
                workflow: name.to_string(),
                path: shown.clone(),
                line: None,
                column: None,
                message: format!("cannot read the file: {e}"),
            })
        });
        let compiled = text.and_then(|t| {
            compile(engine, name, &shown, &t)
                .map(|ast| (ast, t))
                .map_err(WorkflowError::Compile)
        });
        match compiled {
            Ok((ast, text)) => {
                tracing::info!(workflow = name, path = %shown, "workflow override loaded");
                Ok(Entry {
                    origin: Origin::Override,
                    stamp: Some(stamp),
                    ast: Arc::new(ast),
                    source: text.into(),
                    problem: None,
                })
            }
            Err(WorkflowError::Compile(problem)) => {
                tracing::warn!(
                    workflow = name,
                    "workflow override does not compile, the previous version stays in use: {problem}"
                );
                let mut keep = match previous {
                    Some(p) => Entry {
                        origin: p.origin.clone(),
                        stamp: p.stamp,
                        ast: p.ast.clone(),
                        source: p.source.clone(),
                        problem: None,
                    },
                    None => match shipped() {
                        Ok(e) => e,
                        // Nothing ever compiled: the problem is the answer.
                        Err(WorkflowError::NotFound(_)) => {
                            return Err(WorkflowError::Compile(problem));
                        }
                        Err(e) => return Err(e),
                    },
                };
                keep.problem = Some((stamp, problem));
                Ok(keep)
            }
            Err(e) => Err(e),
        }
    }

    /// The source of the version in use.
    pub fn source(
        &self,
        engine: &Engine,
        account: Option<&str>,
        name: &str,
    ) -> Result<Arc<str>, WorkflowError> {
        if let Some((_, source)) = self.account_script(account, name) {
            return Ok(source);
        }
        self.daemon_script(engine, name)?;
        Ok(self.entries.lock().unwrap()[name].source.clone())
    }

    /// Whether the daemon has a script of this name (shipped or in the override directory).
    pub fn daemon_has(&self, name: &str) -> bool {
        shipped_source(name).is_some() || self.override_path(name).is_some_and(|p| p.is_file())
    }

    /// Every workflow and module an account sees: shipped ones, those in the override
    /// directory and the account's own.
    pub fn list(&self, engine: &Engine, account: Option<&str>) -> Vec<ScriptInfo> {
        let mut names: BTreeMap<String, ()> =
            SHIPPED.iter().map(|(n, _)| (n.to_string(), ())).collect();
        let own: HashMap<String, (i64, bool, Option<CompileProblem>)> = match account {
            Some(a) => self
                .accounts
                .lock()
                .unwrap()
                .iter()
                .filter(|((acc, _), _)| acc == a)
                .map(|((_, n), e)| {
                    (
                        n.clone(),
                        (e.version, e.script.is_some(), e.problem.clone()),
                    )
                })
                .collect(),
            None => HashMap::new(),
        };
        for n in own.keys() {
            names.insert(n.clone(), ());
        }
        if let Some(dir) = &self.override_dir
            && let Ok(rd) = std::fs::read_dir(dir)
        {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "rhai")
                    && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
                    && valid_name(stem)
                {
                    names.insert(stem.to_string(), ());
                }
            }
        }
        names
            .into_keys()
            .filter_map(|name| {
                let own = own.get(&name);
                let account_version = own.filter(|(_, in_use, _)| *in_use).map(|(v, ..)| *v);
                let own_problem = own.and_then(|(_, _, p)| p.clone());
                if !self.daemon_has(&name) && account_version.is_none() && own_problem.is_none() {
                    // The account went back to a daemon script that does not exist.
                    return None;
                }
                if account_version.is_some() {
                    return Some(ScriptInfo {
                        origin: Origin::Account,
                        shipped: shipped_source(&name).is_some(),
                        override_path: self
                            .override_path(&name)
                            .filter(|p| p.is_file())
                            .map(|p| p.display().to_string()),
                        problem: None,
                        account_version,
                        name,
                    });
                }
                let loaded = self.daemon_script(engine, &name);
                let entries = self.entries.lock().unwrap();
                let entry = entries.get(&name);
                let override_path = self
                    .override_path(&name)
                    .filter(|p| p.is_file())
                    .map(|p| p.display().to_string());
                Some(ScriptInfo {
                    origin: entry.map_or(Origin::Override, |e| e.origin.clone()),
                    shipped: shipped_source(&name).is_some(),
                    override_path,
                    problem: match loaded {
                        Err(WorkflowError::Compile(p)) => Some(p),
                        _ => own_problem.or_else(|| {
                            entry.and_then(|e| e.problem.as_ref().map(|(_, p)| p.clone()))
                        }),
                    },
                    account_version: None,
                    name,
                })
            })
            .collect()
    }
}

/// Resolves `import "name" as x;` from the same store, for the run's account (its own
/// modules first), so a script can only import other workflow scripts (never a path).
pub struct StoreResolver {
    pub store: Arc<ScriptStore>,
    pub account: Option<String>,
}

impl rhai::ModuleResolver for StoreResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let not_found = || Box::new(EvalAltResult::ErrorModuleNotFound(path.to_string(), pos));
        if !valid_name(path) {
            return Err(not_found());
        }
        let script = self
            .store
            .script(engine, self.account.as_deref(), path)
            .map_err(|e| match e {
                WorkflowError::NotFound(_) => not_found(),
                other => Box::new(EvalAltResult::ErrorInModule(
                    path.to_string(),
                    Box::new(EvalAltResult::ErrorRuntime(other.to_string().into(), pos)),
                    pos,
                )),
            })?;
        let mut module = Module::eval_ast_as_new(Scope::new(), &script.ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos)))?;
        module.build_index();
        Ok(module.into())
    }
}
