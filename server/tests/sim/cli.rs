//! The binary: configuration layering from files, environment and flags.

use std::process::Command;

use serde_json::Value;

fn sim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_translation-sim"));
    c.env_remove("SIM_ENV").env_remove("RUST_LOG");
    c
}

#[test]
fn environment_file_env_vars_and_flags_layer_in_order() {
    let dir = std::env::temp_dir().join(format!("sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("staging.toml"),
        "[legacy]\ndelay = \"3s\"\noutcome = \"error\"\n[jobs]\nerror_rate = 0.5\n",
    )
    .unwrap();
    let out = sim()
        .env("SIM_CONFIG_DIR", &dir)
        .env("SIM_ENV", "staging")
        .env("SIM__JOBS__ERROR_RATE", "0.1")
        .env("SIM__WEBHOOKS__ALLOW_HOSTS", "127.0.0.1,hooks.internal")
        .env("SIM__SERVER__BIND", "127.0.0.1:9999")
        .env("SIM__STORE__BACKEND", "redis")
        .env("SIM__STORE__REDIS_URL", "redis://127.0.0.1:6390/2")
        .args(["--bind", "127.0.0.1:7777", "--print-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["legacy"]["delay"], "3s", "environment file");
    assert_eq!(v["legacy"]["outcome"], "error");
    assert_eq!(v["jobs"]["error_rate"], 0.1, "env var beats the file");
    assert_eq!(
        v["server"]["bind"], "127.0.0.1:7777",
        "--bind beats everything"
    );
    assert_eq!(v["webhooks"]["allow_hosts"][1], "hooks.internal");
    assert_eq!(v["longpoll"]["max_wait"], "20s", "untouched defaults stay");
    assert_eq!(
        (&v["store"]["backend"], &v["store"]["redis_url"]),
        (
            &Value::from("redis"),
            &Value::from("redis://127.0.0.1:6390/2")
        ),
        "the store from SIM__STORE__*"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn invalid_configuration_fails_before_binding_and_names_the_key() {
    for (key, value, named) in [
        ("SIM__JOBS__ERROR_RATE", "2", "jobs.error_rate"),
        ("SIM__LEGACY__DELAY", "whenever", "legacy.delay"),
        ("SIM__LONGPOLL__MAX_WAIT", "5m", "longpoll.max_wait"),
        ("SIM__STORE__BACKEND", "disk", "store.backend"),
        ("SIM__STORE__REDIS_PREFIX", "a b", "store.redis_prefix"),
        ("SIM__STORE__RECONNECT_MIN", "1ms", "store.reconnect_min"),
    ] {
        let out = sim()
            .env(key, value)
            .args(["--bind", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{key}={value}: {err}");
    }
}
