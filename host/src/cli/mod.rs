//! The command-line client: `keyward login`, then a command family per domain (`groups`,
//! `keys`, `policies`, `workflows`, `jobs`, `webhooks`, `notifications`, `audit`, `users`,
//! `apps`), each a thin layer over the REST API. Where it connects comes from `--addr` /
//! `KEYWARD_ADDR`, else the login profile; the token from `--token` / `KEYWARD_TOKEN`, else
//! the profile.
//!
//! - `profile`: the login profiles file (0600).
//! - `client`: HTTP calls, answers as JSON, non-2xx answers as [`CliError::Server`].
//! - `output`: tables for people, `-o json|yaml` for scripts.
//! - `commands`: the families; each parses its arguments into one or more API calls.
//!
//! Exit codes follow Vault: 0 success, 1 local error (arguments, files, no profile), 2 the
//! daemon refused or could not be reached.

mod client;
mod commands;
mod output;
mod profile;

use std::io::Write;
use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};

pub use commands::ClientCommand;
pub use output::Format;

use client::Client;
use output::Shown;
use profile::Profiles;

/// Where and how the client connects, and how it prints (every command takes them).
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// The daemon's base URL (default: the profile's).
    #[arg(long, global = true, env = "KEYWARD_ADDR")]
    pub addr: Option<String>,
    /// A session token (default: the profile's, from `keyward login`).
    #[arg(long, global = true, env = "KEYWARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The login profile to use.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_PROFILE",
        default_value = "default"
    )]
    pub profile: String,
    /// PEM file of a CA to trust for the daemon's certificate (default: the profile's, else
    /// the public roots).
    #[arg(long, global = true, env = "KEYWARD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate presented on every call (a certificate application's; with
    /// --key; default: the profile's, from `keyward login --cert`).
    #[arg(long, global = true, env = "KEYWARD_CLIENT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, global = true, env = "KEYWARD_CLIENT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Output: `table` for people, `json` or `yaml` for scripts (errors too, on stderr).
    #[arg(short = 'o', long = "output", global = true, env = "KEYWARD_OUTPUT", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl ConnArgs {
    /// The TLS settings of this invocation: the flags, else the profile's.
    fn tls(&self, profile: Option<&profile::Profile>) -> Tls {
        Tls {
            ca_cert: self
                .ca_cert
                .clone()
                .or_else(|| profile.and_then(|p| p.ca_cert.clone())),
            client_cert: match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => profile.and_then(|p| p.client_cert.clone().zip(p.client_key.clone())),
            },
        }
    }
}

/// How the client's TLS connections are made.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// A CA to trust for the daemon's certificate.
    pub ca_cert: Option<PathBuf>,
    /// A client certificate and its key (PEM files) to present.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Paging flags of every list the daemon pages.
#[derive(clap::Args, Debug, Clone)]
pub struct Paging {
    /// Rows per page, 1 to 1000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
    /// Rows to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Every row from the offset on, however many pages that takes.
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Exit code 1: bad arguments, an unreadable file, no profile.
    #[error("{0}")]
    Local(String),
    /// Exit code 2: the daemon could not be reached (connection, TLS).
    #[error("{0}")]
    Connect(String),
    /// Exit code 2: what the daemon ran (a sync, a workflow run) failed; its record says why.
    #[error("{message}")]
    Failed { message: String, record: Value },
    /// Exit code 1: what was asked is answered no (a connection test that did not
    /// connect); the record says why.
    #[error("{message}")]
    No { message: String, record: Value },
    /// Exit code 2: the daemon answered with an error.
    #[error("the daemon answered {status}: {}", server_message(.body))]
    Server { status: u16, body: Value },
}

fn server_message(body: &Value) -> String {
    body.get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string())
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Local(_) | CliError::No { .. } => 1,
            CliError::Connect(_) | CliError::Failed { .. } | CliError::Server { .. } => 2,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            CliError::Local(m) => json!({"error": {"kind": "local", "message": m}}),
            CliError::Connect(m) => json!({"error": {"kind": "connection", "message": m}}),
            CliError::Failed { message, record } => {
                json!({"error": {"kind": "failed", "message": message, "record": record}})
            }
            CliError::No { message, record } => {
                json!({"error": {"kind": "no", "message": message, "record": record}})
            }
            CliError::Server { status, body } => {
                let mut e =
                    json!({"kind": "server", "status": status, "message": server_message(body)});
                if let Value::Object(b) = body {
                    for (k, v) in b {
                        if k != "message" {
                            e[k] = v.clone();
                        }
                    }
                }
                json!({ "error": e })
            }
        }
    }
}

/// A local error.
pub fn local(message: impl Into<String>) -> CliError {
    CliError::Local(message.into())
}

/// What a command needs: the connection and the output format.
pub struct Ctx {
    pub conn: ConnArgs,
    client: Option<Client>,
    /// The account the profile's session acts in, when known.
    pub account: Option<String>,
}

impl Ctx {
    fn new(conn: ConnArgs) -> Result<Ctx, CliError> {
        let profiles = Profiles::load()?;
        let profile = profiles.get(&conn.profile);
        let addr = conn
            .addr
            .clone()
            .or_else(|| profile.map(|p| p.addr.clone()));
        let token = conn
            .token
            .clone()
            .or_else(|| profile.and_then(|p| p.token.clone()));
        let tls = conn.tls(profile);
        let client = match addr {
            Some(a) => Some(Client::new(&a, &tls, token)?),
            None => None,
        };
        Ok(Ctx {
            account: profile.and_then(|p| p.account.clone()),
            conn,
            client,
        })
    }

    fn client(&self) -> Result<&Client, CliError> {
        self.client.as_ref().ok_or_else(|| {
            local(format!(
                "no daemon to talk to: run `keyward login --addr URL` (profile '{}'), or set KEYWARD_ADDR",
                self.conn.profile
            ))
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        Ok(self
            .client()?
            .call(method, path, body.as_ref())
            .await?
            .value)
    }

    /// A paged list (`path` with its filters, without `limit` and `offset`): one page, or
    /// with `--all` every page from the offset on, `largest_page` rows at a time (what the
    /// endpoint allows). A page that leaves rows out says so on stderr, so a cut list is
    /// never mistaken for the whole.
    pub async fn list(
        &self,
        path: &str,
        paging: &Paging,
        largest_page: u64,
    ) -> Result<Value, CliError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut offset = paging.offset;
        let limit = if paging.all {
            largest_page
        } else {
            paging.limit
        };
        loop {
            let page = self
                .client()?
                .call(
                    Method::GET,
                    &format!("{path}{sep}limit={limit}&offset={offset}"),
                    None,
                )
                .await?;
            let got = match page.value {
                Value::Array(rows) => rows,
                other => return Ok(other),
            };
            let n = got.len() as u64;
            items.extend(got);
            offset += n;
            // Lists without a total have more while pages come back full.
            let more = match page.total {
                Some(total) => offset < total,
                None => n == limit,
            };
            if !more || n == 0 {
                break;
            }
            if !paging.all {
                let of = page.total.map(|t| format!(" of {t}")).unwrap_or_default();
                eprintln!(
                    "showing {}{of} from offset {}; --all for every one, --offset {offset} for the next page",
                    items.len(),
                    paging.offset
                );
                break;
            }
        }
        Ok(Value::Array(items))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::DELETE, path, None).await
    }

    /// Progress bars only for people watching a terminal.
    pub fn progress_visible(&self) -> bool {
        self.conn.output == Format::Table
    }
}

/// Runs one client command and prints its answer (stdout) or its error (stderr); returns
/// the exit code.
pub async fn run(conn: ConnArgs, command: ClientCommand) -> i32 {
    let format = conn.output;
    let result = match Ctx::new(conn) {
        Ok(ctx) => command.run(&ctx).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(shown) => {
            let text = output::render(format, &shown);
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error of ours.
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            0
        }
        Err(e) => {
            print_error(format, &e);
            e.exit_code()
        }
    }
}

/// Prints an error in the chosen format, on stderr.
pub fn print_error(format: Format, e: &CliError) {
    let text = match format {
        Format::Table => format!("error: {e}\n"),
        Format::Json | Format::Yaml => output::render(format, &Shown::object(e.to_json())),
    };
    let _ = std::io::stderr().write_all(text.as_bytes());
}
