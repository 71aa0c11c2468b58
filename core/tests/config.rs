//! Configuration: serde (TOML/JSON), environment, and the whole-config validation.

use std::time::Duration;

use genesys_keepalive::{Config, ConfigError, ProfileKind, Region};

#[test]
fn every_field_reads_from_toml_with_ms_durations() {
    let defaults = toml::to_string(&Config::default()).unwrap();
    // Every field of the defaults is written, so this is the full list a TOML file may hold.
    for key in [
        "profile",
        "region",
        "allow_insecure",
        "min_interval_ms",
        "idle_timeout_ms",
        "ack_timeout_ms",
        "max_missed_acks",
        "max_payload_bytes",
        "max_inbound_bytes",
        "rtt_window",
        "latency_threshold_ms",
        "recovery_samples",
        "max_packet_loss",
        "backoff_base_ms",
        "backoff_factor",
        "backoff_max_ms",
        "max_reconnect_attempts",
        "min_uptime_ms",
        "connect_timeout_ms",
        "token_refresh_margin_ms",
        "request_timeout_ms",
        "retry_after_default_ms",
        "retry_budget_ms",
        "resubscribe_margin_ms",
        "rollover_deadline_ms",
        "dedup_window",
        "stable_ms",
        "degraded_ms",
        "reconnecting_ms",
    ] {
        assert!(defaults.contains(key), "{key} missing from\n{defaults}");
    }
    let c: Config = toml::from_str(
        r#"
        profile = "keepalive-frame"
        region = "mypurecloud.de"
        url = "ws://127.0.0.1:9000/keepalive"
        allow_insecure = true
        min_interval_ms = 100
        idle_timeout_ms = 2000
        ack_timeout_ms = 1000
        latency_threshold_ms = 250
        max_packet_loss = 0.25
        backoff_base_ms = 100
        backoff_max_ms = 1000
        max_reconnect_attempts = 9
        [interval_matrix]
        stable_ms = 500
        degraded_ms = 250
        reconnecting_ms = 125
        "#,
    )
    .unwrap();
    assert_eq!(c.profile, ProfileKind::KeepaliveFrame);
    assert_eq!(c.region.name(), "eu-central-1");
    assert_eq!(c.max_idle, Duration::from_millis(2000));
    assert_eq!(c.interval_matrix.reconnecting, Duration::from_millis(125));
    assert_eq!(c.max_reconnect_attempts, 9);
    assert_eq!(
        c.token_refresh_margin,
        Duration::from_secs(30),
        "unset fields keep defaults"
    );
    c.validate().unwrap();
}

#[test]
fn unknown_fields_and_regions_are_errors() {
    let e = toml::from_str::<Config>("heartbeat_ms = 5")
        .unwrap_err()
        .to_string();
    assert!(e.contains("heartbeat_ms"), "{e}");
    let e = toml::from_str::<Config>(r#"region = "moon-1""#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("moon-1") && e.contains("us-east-1"), "{e}");
}

#[test]
fn environment_supplies_credentials_and_region() {
    let mut c = Config::default();
    let env = |k: &str| match k {
        "GENESYS_CLIENT_ID" => Some("id-1".to_string()),
        "GENESYS_CLIENT_SECRET" => Some("sec-1".to_string()),
        "GENESYS_REGION" => Some("ap-southeast-2".to_string()),
        _ => None,
    };
    c.apply_env(env).unwrap();
    assert_eq!(c.client_id.as_deref(), Some("id-1"));
    assert_eq!(c.client_secret.as_ref().unwrap().expose(), "sec-1");
    assert_eq!(c.region, "ap-southeast-2".parse::<Region>().unwrap());
    assert_eq!(
        c.token_url(),
        "https://login.mypurecloud.com.au/oauth/token"
    );
    c.validate().unwrap();
    let mut bad = Config::default();
    assert!(matches!(
        bad.apply_env(|k| (k == "GENESYS_REGION").then(|| "nowhere".to_string())),
        Err(ConfigError::Region(_))
    ));
}

#[test]
fn plain_text_endpoints_need_allow_insecure() {
    let mut c = Config {
        client_id: Some("id".into()),
        client_secret: Some("s".into()),
        api_base: Some("http://127.0.0.1:8080".into()),
        login_base: Some("http://127.0.0.1:8080/".into()),
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("api_base") && e.contains("allow_insecure"),
        "{e}"
    );
    c.allow_insecure = true;
    c.validate().unwrap();
    assert_eq!(
        c.token_url(),
        "http://127.0.0.1:8080/oauth/token",
        "trailing slash trimmed"
    );
}

#[test]
fn missing_pieces_are_named() {
    let e = Config::default().validate().unwrap_err().to_string();
    assert!(e.contains("GENESYS_CLIENT_ID"), "{e}");
    let c = Config {
        profile: ProfileKind::KeepaliveFrame,
        ..Config::default()
    };
    assert!(c.validate().unwrap_err().to_string().contains("url"));
    let c = Config {
        client_id: Some("id".into()),
        client_secret: Some("s".into()),
        max_packet_loss: 1.5,
        backoff_max: Duration::from_millis(1),
        topics: vec!["has space".into()],
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    for f in ["max_packet_loss", "backoff_max_ms", "topics"] {
        assert!(e.contains(f), "{f} not named in {e}");
    }
}
