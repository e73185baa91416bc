//! Headless Debian Chromium driven through chromedriver (installed by `.ci/run`), with the
//! few steps the console tests take: go, fill, click, read, wait, screenshot.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    driver: Child,
    pub client: Client,
    base: String,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub async fn start(base: &str) -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the console tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut args = vec![
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ];
        // Chromium's sandbox refuses to run as root (CI containers).
        if running_as_root() {
            args.push("--no-sandbox");
        }
        let caps = json!({"goog:chromeOptions": {"binary": CHROMIUM, "args": args}});
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver takes a moment to listen.
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    let shots =
                        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
                    std::fs::create_dir_all(&shots).unwrap();
                    return Browser {
                        driver,
                        client,
                        base: base.to_string(),
                        shots,
                    };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start: {last:?}");
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    pub async fn el(&self, testid: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(&format!("[data-testid=\"{testid}\"]")))
            .await;
        match found {
            Ok(e) => e,
            Err(e) => {
                let _ = self.shot("failure").await;
                let page = self.client.find(Locator::Css("main")).await;
                let text = match page {
                    Ok(m) => m.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("no element {testid} ({e}) at {}:\n{text}", self.url().await)
            }
        }
    }

    pub async fn fill(&self, testid: &str, text: &str) {
        let e = self.el(testid).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, testid: &str) {
        self.el(testid).await.click().await.unwrap();
    }

    pub async fn text(&self, testid: &str) -> String {
        self.el(testid).await.text().await.unwrap()
    }

    /// Waits until the element's text contains `wanted` (pages update from the script, and
    /// a form's answer replaces the page: an element of the old page goes stale).
    pub async fn wait_text(&self, testid: &str, wanted: &str) -> String {
        let css = format!("[data-testid=\"{testid}\"]");
        let mut seen = String::new();
        for _ in 0..300 {
            if let Ok(e) = self.client.find(Locator::Css(&css)).await
                && let Ok(t) = e.text().await
            {
                if t.contains(wanted) {
                    return t;
                }
                seen = t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.shot("failure").await;
        panic!(
            "{testid} never showed '{wanted}'; it shows '{seen}' at {}",
            self.url().await
        );
    }

    /// Signs in from the login page; the dashboard is the start page.
    pub async fn login(&self, email: &str, password: &str) {
        self.goto("/console/login").await;
        self.fill("login-email", email).await;
        self.fill("login-password", password).await;
        self.click("login-submit").await;
        self.el("tile-keys").await;
    }

    /// Sets an input's value directly: what a date picker would enter (typing into one
    /// depends on the browser's locale).
    pub async fn set_value(&self, testid: &str, value: &str) {
        let e = self.el(testid).await;
        self.client
            .execute(
                "arguments[0].value = arguments[1];",
                vec![serde_json::to_value(&e).unwrap(), json!(value)],
            )
            .await
            .unwrap();
    }

    pub async fn select(&self, testid: &str, value: &str) {
        self.el(testid).await.select_by_value(value).await.unwrap();
    }

    /// Ticks (or unticks) a checkbox.
    pub async fn tick(&self, testid: &str, on: bool) {
        let e = self.el(testid).await;
        if e.is_selected().await.unwrap() != on {
            e.click().await.unwrap();
        }
    }

    /// Ticks the checkbox `[name=..][value=..]` (several share a test id).
    pub async fn tick_value(&self, name: &str, value: &str, on: bool) {
        let e = self
            .client
            .find(Locator::Css(&format!(
                "input[name=\"{name}\"][value=\"{value}\"]"
            )))
            .await
            .unwrap();
        if e.is_selected().await.unwrap() != on {
            e.click().await.unwrap();
        }
    }

    pub async fn attr(&self, testid: &str, name: &str) -> Option<String> {
        self.el(testid).await.attr(name).await.unwrap()
    }

    /// The elements with a test id.
    pub async fn all(&self, testid: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(Locator::Css(&format!("[data-testid=\"{testid}\"]")))
            .await
            .unwrap()
    }

    /// Chooses a file for a file input.
    pub async fn upload(&self, testid: &str, path: &std::path::Path) {
        self.el(testid)
            .await
            .send_keys(path.to_str().unwrap())
            .await
            .unwrap();
    }

    /// The session cookie, for calls beside the browser (downloads).
    pub async fn session_cookie(&self) -> String {
        let c = self
            .client
            .get_named_cookie("keyward_console")
            .await
            .unwrap();
        format!("keyward_console={}", c.value())
    }

    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
