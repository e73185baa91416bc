//! An Azure Managed HSM emulator and a daemon whose Azure connector may reach it, with the
//! emulator's CA configured as the group's custom CA: everything over HTTPS, as against Azure.

use std::time::Duration;

use keyward::daemon::DaemonConfig;
use keyward::kms::{AZURE_PLUGIN, Link};
use keyward::plugins::HostPattern;
use keyward_emulator::config::{ApplicationConfig, HsmConfig, RoleAssignment, demo};
use keyward_emulator::{EmulatorConfig, FaultConfig, RunningEmulator};
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{Api, TestDaemon};

pub const TENANT: &str = demo::TENANT;
pub const CLIENT: &str = demo::CLIENT_ID;
pub const SECRET: &str = demo::CLIENT_SECRET;
pub const SUBSCRIPTION: &str = demo::SUBSCRIPTION;
pub const HSM: &str = demo::HSM;
/// An HSM with a 7-day retention and purge protection.
pub const LOCKED_HSM: &str = "locked-hsm";
/// An application of the demo tenant with no role anywhere.
pub const NO_ROLE_CLIENT: &str = "0c3d1b7e-5a44-4d1f-9f0e-6e2a8b9c7d11";
pub const NO_ROLE_SECRET: &str = "no-role-secret";

/// The emulator's demo set-up plus a purge-protected HSM and an application without roles.
pub async fn emulator() -> RunningEmulator {
    let mut config = EmulatorConfig::demo();
    config.hsms.push(HsmConfig {
        name: LOCKED_HSM.into(),
        subscription: SUBSCRIPTION.into(),
        resource_group: "keyward-demo".into(),
        location: "westeurope".into(),
        retention_days: 7,
        purge_protection: true,
        roles: vec![RoleAssignment {
            principal: CLIENT.into(),
            role: "Managed HSM Administrator".into(),
        }],
    });
    config.applications.push(ApplicationConfig {
        tenant: TENANT.into(),
        client_id: NO_ROLE_CLIENT.into(),
        client_secret: NO_ROLE_SECRET.into(),
        name: Some("no-role".into()),
    });
    keyward_emulator::start(config)
        .await
        .expect("the emulator starts")
}

/// Lets the Azure connector reach any local port (the emulator, and closed ports for the
/// unreachable case).
pub fn allow_local(config: &mut DaemonConfig) {
    config.extra_outbound_hosts.insert(
        AZURE_PLUGIN.to_string(),
        vec![
            HostPattern::parse("https://localhost:*").unwrap(),
            HostPattern::parse("https://*.localhost:*").unwrap(),
        ],
    );
}

/// A link to the emulator (the `external_kms` of a group request).
pub fn link(em: &RunningEmulator, secret: &str, instance: Option<&str>) -> Value {
    let mut l = json!({
        "kind": "AzureManagedHsm",
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "client_secret": secret,
        "subscription_id": SUBSCRIPTION,
        "endpoints": {"identity": em.base_url, "management": em.base_url, "instance_suffix": "localhost"},
        "tls": {"ca_pem": em.ca_pem, "validate_hostname": true},
    });
    if let Some(i) = instance {
        l["instance"] = json!(em.hsm_uri(i));
    }
    l
}

pub const STANDARD_VAULT: &str = demo::STANDARD_VAULT;
pub const PREMIUM_VAULT: &str = demo::PREMIUM_VAULT;

/// A link to one of the emulator's vaults (`STANDARD` or `PREMIUM`).
pub fn vault_link(em: &RunningEmulator, vault: &str, vault_type: &str) -> Value {
    let mut l = link(em, SECRET, None);
    l["endpoints"]["vault_suffix"] = json!("vault.localhost");
    l["instance"] = json!(em.vault_uri(vault));
    l["key_vault_type"] = json!(vault_type);
    l
}

/// A daemon and emulator, an administrator session, a group linked to the demo HSM and an
/// application in it (and in a plain group for source keys).
pub struct Azure {
    pub em: RunningEmulator,
    pub daemon: TestDaemon,
    pub admin: Api,
    pub group: String,
    pub plain_group: String,
    pub app: Api,
}

impl Azure {
    pub async fn start() -> Azure {
        Azure::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut DaemonConfig)) -> Azure {
        Azure::start_linked(adjust, |em| link(em, SECRET, Some(HSM))).await
    }

    /// As [`Azure::start`], the group linked to one of the emulator's vaults.
    pub async fn start_in_vault(vault: &str, vault_type: &str) -> Azure {
        Azure::start_in_vault_with(vault, vault_type, |_| {}).await
    }

    /// As [`Azure::start_in_vault`], the daemon configured further by `adjust`.
    pub async fn start_in_vault_with(
        vault: &str,
        vault_type: &str,
        adjust: impl FnOnce(&mut DaemonConfig),
    ) -> Azure {
        Azure::start_linked(adjust, |em| vault_link(em, vault, vault_type)).await
    }

    async fn start_linked(
        adjust: impl FnOnce(&mut DaemonConfig),
        link_to: impl FnOnce(&RunningEmulator) -> Value,
    ) -> Azure {
        let em = emulator().await;
        let daemon = TestDaemon::start_with(|c| {
            allow_local(c);
            adjust(c);
        })
        .await;
        let admin = daemon.bootstrap().await;
        let group = admin
            .create_group("azure", json!({"external_kms": link_to(&em)}))
            .await;
        let plain_group = admin.create_group("plain", json!({})).await;
        let (_, key) = admin.create_app("app", &[&plain_group, &group]).await;
        let app = daemon.login_app(&key).await;
        Azure {
            em,
            daemon,
            admin,
            group,
            plain_group,
            app,
        }
    }

    /// The group's link, for looking at the HSM directly.
    pub async fn link(&self) -> Link {
        let mut conn = self.daemon.state.catalog.conn().await.unwrap();
        let account: String =
            keyward::catalog::db::query("SELECT account_id FROM groups WHERE id = ?")
                .bind(&self.group)
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get(0);
        let g = self
            .daemon
            .state
            .group(&account, &self.group)
            .await
            .unwrap()
            .unwrap();
        Link::of_group(&self.daemon.state.catalog, &g).unwrap()
    }

    /// The key as the HSM has it now (`None`: no live key of that name).
    pub async fn remote(&self, name: &str) -> Option<keyward::plugins::kms::RemoteKey> {
        self.daemon
            .state
            .kms
            .find_key(&self.link().await, name)
            .await
            .unwrap()
    }

    /// Seeds `count` keys named `{prefix}-00001`... in an HSM (AES by default).
    pub async fn seed(&self, hsm: &str, body: Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/admin/hsms/{hsm}/seed", self.em.admin_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "seeding: {}",
            resp.text().await.unwrap()
        );
    }

    pub fn faults(&self, f: FaultConfig) {
        self.em.set_faults(f).unwrap();
    }

    /// Syncs the group now; returns the added keys.
    pub async fn sync(&self) -> Vec<Value> {
        let path = format!("/sys/v1/groups/{}/hmg/scan", self.group);
        self.admin
            .ok(Method::POST, &path, None)
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// Runs `SELECT COUNT(*) ...` on the catalog.
    pub async fn count(&self, sql: &str, bind: &str) -> i64 {
        let mut conn = self.daemon.state.catalog.conn().await.unwrap();
        keyward::catalog::db::Builder::new(sql)
            .build()
            .bind(bind)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0)
    }

    pub async fn stop(self) {
        self.daemon.stop().await;
        self.em.stop().await;
    }
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "condition not met within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no workflow run of the account is running (background connection checks
/// included), so a catalog snapshot is stable.
pub async fn settle(admin: &Api) {
    eventually(30, || async {
        let runs = admin
            .ok(Method::GET, "/sys/v1/workflow_runs?limit=200", None)
            .await;
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "running")
            .then_some(())
    })
    .await
}
