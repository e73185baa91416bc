//! What a plugin instance's store holds, and the host imports every world shares (`log`,
//! WASI with nothing granted).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1_0::kms_connector::keyward::plugin::http::{self, Request, Response};
use super::bindings::v0_1_0::policy::keyward::plugin::{log, types};
use super::engine::PluginEngine;
use super::http::HttpGate;
use super::manifest::Limits;

/// Per-instance state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) plugin: Arc<str>,
    pub(crate) limiter: MemoryLimiter,
    /// When the current call must end; checked on every epoch tick.
    pub(crate) deadline: Instant,
    /// The end of the plugin's stderr (panic messages), for error reports.
    pub(crate) stderr: StderrTail,
    /// Outbound HTTP for connectors; `None` for policies.
    pub(crate) http: Option<HttpGate>,
}

impl HostState {
    pub fn new(plugin: Arc<str>, limits: &Limits, http: Option<HttpGate>) -> HostState {
        let stderr = StderrTail::default();
        let mut wasi = WasiCtx::builder();
        // Nothing is granted: no preopened directories, no environment, no arguments, no
        // sockets. Clocks and randomness come from the host.
        wasi.stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            plugin,
            limiter: MemoryLimiter {
                max_bytes: limits.memory_bytes,
                exceeded: false,
            },
            deadline: Instant::now(),
            stderr,
            http,
        }
    }

    /// A store for this state with the memory ceiling and the deadline check installed.
    pub fn into_store(self, engine: &PluginEngine) -> Store<HostState> {
        let mut store = Store::new(engine.engine(), self);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Let other tasks run, then look again on the next tick.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `http` import: only where the plugin's manifest and the daemon allow it.
impl http::Host for HostState {
    async fn send(&mut self, req: Request) -> Result<Response, http::Error> {
        let Some(gate) = self.http.clone() else {
            return Err(http::Error::Denied(
                "this plugin may not make HTTP requests".into(),
            ));
        };
        super::http::send(&self.plugin, &gate, req).await
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> Result<()> {
        // Plugins are not trusted to keep their messages short.
        let message: String = message.chars().take(4096).collect();
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(target: "keyward::plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "keyward::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "keyward::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "keyward::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "keyward::plugin", plugin, "{message}"),
        }
        Ok(())
    }
}

/// Raised (as a trap) when a plugin tries to grow its memory past its ceiling.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: wanted {wanted} bytes, limit is {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub wanted: usize,
    pub limit: usize,
}

pub struct MemoryLimiter {
    max_bytes: usize,
    pub(crate) exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            // An error (rather than `Ok(false)`) traps right at the growth, so the plugin
            // cannot carry on with a failed allocation.
            return Err(MemoryLimitExceeded {
                wanted: desired,
                limit: self.max_bytes,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Keeps the last few KiB a plugin wrote to stderr (where Rust panics go) and forwards each
/// write to the daemon's log.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

const STDERR_TAIL: usize = 2048;

impl StderrTail {
    pub fn text(&self) -> String {
        let buf = self.0.lock().unwrap();
        let (a, b) = buf.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buf = self.0.lock().unwrap();
        buf.extend(data.iter().copied());
        let excess = buf.len().saturating_sub(STDERR_TAIL);
        buf.drain(..excess);
        tracing::debug!(target: "keyward::plugin", "plugin stderr: {}", String::from_utf8_lossy(data).trim_end());
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
