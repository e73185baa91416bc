//! A daemon in a child process, for tests that kill it with SIGKILL: the test binary runs
//! itself with one ignored test selected, whose body ([`serve`]) runs a daemon on the data
//! directory named in the environment and writes its address next to it.

use std::path::Path;
use std::time::Duration;

use keyward::daemon::DaemonConfig;

use crate::api::Endpoint;

const CHILD_DIR: &str = "KEYWARD_TEST_CHILD_DATA_DIR";

/// The body of the child test: a daemon on the directory [`spawn`] named, configured by
/// `configure` after the tests' defaults (loopback, the shared plugin cache, the test
/// database); returns at once in a process that is not a child.
pub fn serve(configure: impl FnOnce(&mut DaemonConfig)) {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut config = DaemonConfig::new(&dir);
        config.database = crate::postgres::location_for(Path::new(&dir)).await;
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.plugin_cache_dir = Some(crate::cache_dir());
        configure(&mut config);
        let running = keyward::daemon::start(config, std::future::pending())
            .await
            .expect("the child daemon starts");
        std::fs::write(Path::new(&dir).join("addr"), running.addr.to_string()).unwrap();
        running.wait().await.unwrap();
    });
}

/// Starts this test binary's test `test` (whose body is [`serve`]) as a daemon on `dir`;
/// the process and its API.
// The caller owns the child: it kills and waits for it.
#[allow(clippy::zombie_processes)]
pub async fn spawn(dir: &Path, test: &str) -> (std::process::Child, Endpoint) {
    let addr_file = dir.join("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut waited = Duration::ZERO;
    loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            return (child, Endpoint::at(&format!("http://{addr}")));
        }
        if waited > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child daemon did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}
