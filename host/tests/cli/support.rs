//! The demo daemon the CLI tests run against, and the client's answers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use keyward_emulator::config::demo;

/// The client's answer to one command.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }

    pub fn error(&self) -> serde_json::Value {
        serde_json::from_str(&self.stderr)
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", self.stderr))
    }
}

/// `keyward serve` with its demo set-up (an emulated Managed HSM, an administrator, an
/// application, a local and an Azure-linked group), as a first-time user starts it.
pub struct Demo {
    child: std::process::Child,
    pub data: tempfile::TempDir,
    pub config: tempfile::TempDir,
    pub api: String,
    details: serde_json::Value,
    pub emulator_port: u16,
    /// The emulator's admin API, on the port the test chose.
    pub emulator_admin_port: u16,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Demo {
    pub fn start() -> Demo {
        let data = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(data.path().join("daemon.log")).unwrap();
        let (emulator_port, admin_port) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--demo", "true", "--listen", "127.0.0.1:0"])
            .args(["--demo-emulator-port", &emulator_port.to_string()])
            .args(["--demo-emulator-admin-port", &admin_port.to_string()])
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut api = None;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.trim().strip_prefix("REST API") {
                api = rest.split_whitespace().next().map(str::to_string);
            }
            if line.contains("These details are in") {
                break;
            }
        }
        // Keep reading what the daemon still prints, as a terminal would.
        std::thread::spawn(move || lines.for_each(drop));
        let api = api.unwrap_or_else(|| {
            panic!(
                "the demo did not start: {}",
                std::fs::read_to_string(data.path().join("daemon.log")).unwrap_or_default()
            )
        });
        let details = serde_json::from_str(
            &std::fs::read_to_string(data.path().join("data/demo.json")).unwrap(),
        )
        .unwrap();
        Demo {
            child,
            data,
            config: tempfile::tempdir().unwrap(),
            api,
            details,
            emulator_port,
            emulator_admin_port: admin_port,
        }
    }

    pub fn detail(&self, name: &str) -> String {
        self.details[name].as_str().unwrap().to_string()
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.args(args)
            .env("KEYWARD_CONFIG_DIR", self.config.path())
            .current_dir(self.data.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in [
            "KEYWARD_ADDR",
            "KEYWARD_TOKEN",
            "KEYWARD_PROFILE",
            "KEYWARD_OUTPUT",
        ] {
            cmd.env_remove(v);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A command that must succeed, with `-o json`.
    pub fn ok(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.run(&all, None);
        assert_eq!(out.code, 0, "keyward {args:?}: {}", out.stderr);
        out.json()
    }
}

pub fn kid(v: &serde_json::Value) -> String {
    v["kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no kid: {v}"))
        .to_string()
}

impl Demo {
    /// Logs the demo's administrator in under the default profile.
    pub fn login_admin(&self) {
        let out = self.run(
            &[
                "login",
                "--addr",
                &self.api,
                "--email",
                &self.detail("user_email"),
                "--password-stdin",
            ],
            Some(&self.detail("user_password")),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    /// Logs the demo's application in under `profile`.
    pub fn login_app(&self, profile: &str) {
        let out = self.run(
            &[
                "login",
                "--addr",
                &self.api,
                "--api-key-stdin",
                "--profile",
                profile,
            ],
            Some(&self.detail("api_key")),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    /// A command that must succeed, as `profile`, with `-o json`.
    pub fn ok_as(&self, profile: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--profile", profile];
        all.extend(args);
        self.ok(&all)
    }

    /// The `groups link`/`groups check` flags of a link to the demo's emulated HSM (without
    /// the instance), the secret to come from stdin.
    pub fn emulator_link_flags(&self) -> Vec<String> {
        let base = format!("https://localhost:{}", self.emulator_port);
        let ca = self.data.path().join("data/emulator/ca.pem");
        [
            "--tenant",
            demo::TENANT,
            "--client-id",
            demo::CLIENT_ID,
            "--subscription",
            demo::SUBSCRIPTION,
            "--client-secret-stdin",
            "--ca-pem",
            ca.to_str().unwrap(),
            "--identity-endpoint",
            &base,
            "--management-endpoint",
            &base,
            "--instance-suffix",
            "localhost",
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Writes `bytes` to a file of the demo's directory; its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.data.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }
}
