//! Latency of one policy decision: through the plugin runtime with a warm instance, with a
//! fresh instance per decision (instantiate + configure + evaluate), and computed natively.
//!
//! Run with `cargo bench -p keyward --bench policy_decision`. Target: warm p50 <= 10 µs.

use std::time::{Duration, Instant};

use keyward::plugins::policy as host;
use keyward::plugins::{PluginRuntime, RuntimeConfig};
use keyward_policy_sdk as guest;

const CONFIG: &str = r#"{
    "aes": {"key_sizes": [256]},
    "rsa": {"minimum_key_length": 3072, "key_sizes": [3072, 4096]},
    "ec": {"elliptic_curves": ["NistP256", "NistP384"]},
    "key_ops": ["ENCRYPT", "DECRYPT", "SIGN", "VERIFY", "WRAPKEY", "UNWRAPKEY"],
    "legacy_policy": "unprotect_only"
}"#;
const WARM_ROUNDS: usize = 50_000;
const FRESH_ROUNDS: usize = 2_000;

fn host_request() -> host::PolicyRequest {
    host::PolicyRequest {
        action: host::Action::Create,
        principal: host::Principal::User("alice@example.com".into()),
        account: "acct-1".into(),
        group: "group-1".into(),
        key: host::KeyAttributes {
            name: "payments-key".into(),
            description: Some("card data".into()),
            spec: host::KeySpec {
                key_type: host::KeyType::Rsa,
                size: Some(2048),
                curve: None,
            },
            ops: vec![host::KeyOp::Sign, host::KeyOp::Verify],
            enabled: true,
            state: None,
            created: Some(1_767_225_600),
            activation: None,
            deactivation: None,
            tags: vec![host::Tag {
                name: "owner".into(),
                value: "payments".into(),
            }],
            external: false,
        },
        current: None,
        now: 1_767_225_600,
    }
}

fn guest_request() -> guest::PolicyRequest {
    guest::PolicyRequest {
        action: guest::Action::Create,
        principal: guest::Principal::User("alice@example.com".into()),
        account: "acct-1".into(),
        group: "group-1".into(),
        key: guest::KeyAttributes {
            name: "payments-key".into(),
            description: Some("card data".into()),
            spec: guest::KeySpec {
                key_type: guest::KeyType::Rsa,
                size: Some(2048),
                curve: None,
            },
            ops: vec![guest::KeyOp::Sign, guest::KeyOp::Verify],
            enabled: true,
            state: None,
            created: Some(1_767_225_600),
            activation: None,
            deactivation: None,
            tags: vec![guest::Tag {
                name: "owner".into(),
                value: "payments".into(),
            }],
            external: false,
        },
        current: None,
        now: 1_767_225_600,
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        mean,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print(label: &str, s: &Stats) {
    println!(
        "{label:<44} p50 {:>8.2} µs   p99 {:>8.2} µs   mean {:>8.2} µs",
        us(s.p50),
        us(s.p99),
        us(s.mean)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The same component twice: shipped (warm pool) and from a directory with no idle
    // instances kept, so every decision instantiates and configures afresh.
    let dir = tempfile::tempdir().unwrap();
    let (manifest, component) = PluginRuntime::shipped_plugin("crypto-policy").expect("shipped");
    let fresh_manifest = manifest
        .replace("name = \"crypto-policy\"", "name = \"crypto-policy-fresh\"")
        .replace("[limits]", "[limits]\nmax_idle_instances = 0");
    std::fs::write(dir.path().join("crypto-policy-fresh.toml"), fresh_manifest).unwrap();
    std::fs::write(dir.path().join("crypto_policy.wasm"), component).unwrap();
    let rt = PluginRuntime::start(RuntimeConfig {
        plugin_dir: Some(dir.path().to_path_buf()),
        cache_dir: Some(dir.path().join("cache")),
        without_builtins: false,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(rt.problems().is_empty(), "{:?}", rt.problems());

    let req = host_request();
    let expected = rt
        .evaluate_policy("crypto-policy", CONFIG, &req)
        .await
        .unwrap();
    assert!(
        !expected.allow && expected.violations.len() == 2,
        "the benchmark decision denies with two reasons"
    );

    for _ in 0..2_000 {
        rt.evaluate_policy("crypto-policy", CONFIG, &req)
            .await
            .unwrap();
    }
    let mut warm = Vec::with_capacity(WARM_ROUNDS);
    for _ in 0..WARM_ROUNDS {
        let t = Instant::now();
        let d = rt
            .evaluate_policy("crypto-policy", CONFIG, &req)
            .await
            .unwrap();
        warm.push(t.elapsed());
        std::hint::black_box(d);
    }

    let mut fresh = Vec::with_capacity(FRESH_ROUNDS);
    for _ in 0..FRESH_ROUNDS {
        let t = Instant::now();
        let d = rt
            .evaluate_policy("crypto-policy-fresh", CONFIG, &req)
            .await
            .unwrap();
        fresh.push(t.elapsed());
        std::hint::black_box(d);
    }

    let policy = crypto_policy::CryptoPolicy::parse(CONFIG).unwrap();
    let greq = guest_request();
    let native_decision =
        <crypto_policy::CryptoPolicy as guest::Policy>::evaluate(&policy, &greq).unwrap();
    assert_eq!(
        native_decision.violations.len(),
        expected.violations.len(),
        "native and plugin agree"
    );
    let mut native = Vec::with_capacity(WARM_ROUNDS);
    for _ in 0..WARM_ROUNDS {
        let t = Instant::now();
        let d = <crypto_policy::CryptoPolicy as guest::Policy>::evaluate(
            &policy,
            std::hint::black_box(&greq),
        );
        native.push(t.elapsed());
        let _ = std::hint::black_box(d);
    }

    let (warm, fresh, native) = (stats(warm), stats(fresh), stats(native));
    println!("policy decision: crypto-policy, RSA-2048 create, denied with 2 reasons");
    print("plugin runtime, warm instance", &warm);
    print("plugin runtime, fresh instance per decision", &fresh);
    print("native Rust (same policy code)", &native);
    println!(
        "ratio warm/native p50 {:.1}x   fresh/warm p50 {:.1}x   target warm p50 <= 10 µs: {}",
        us(warm.p50) / us(native.p50).max(0.001),
        us(fresh.p50) / us(warm.p50),
        if us(warm.p50) <= 10.0 {
            "met"
        } else {
            "MISSED"
        }
    );
}
