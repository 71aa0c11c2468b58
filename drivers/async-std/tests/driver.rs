//! The driver's own checks that need no gateway, under async-std and under smol (the end-to-end scenarios
//! live in the testkit: `cargo test -p genesys-keepalive-testkit --test e2e_async_std --test e2e_smol`).

use std::time::Duration;

use futures_lite::future;
use genesys_keepalive::{Config, ProfileKind, StopReason};
use genesys_keepalive_async_std::{connect, connect_with, CertificateDer, Error, Options, Spawner};

fn keepalive_config(url: &str) -> Config {
    Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url(url)
        .allow_insecure(true)
        .heartbeat_interval(Duration::from_millis(400))
        .max_idle(Duration::from_millis(1500))
        .ack_timeout(Duration::from_millis(1000))
        .backoff_base(Duration::from_millis(20))
        .max_reconnect_attempts(2)
        .build()
        .expect("a valid config")
}

fn smol_options() -> Options {
    Options::default().spawner(Spawner::new(|task| smol::spawn(task).detach()))
}

#[async_std::test]
async fn an_invalid_config_is_refused_before_anything_runs() {
    let config = Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url("ws://127.0.0.1:9/keepalive")
        .build_unchecked();
    match connect(config).await {
        Err(Error::Config(e)) => assert!(e.to_string().contains("allow_insecure"), "{e}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn an_unusable_extra_root_is_a_tls_error() {
    let options = smol_options().trust_root(CertificateDer::from(vec![1u8, 2, 3]));
    let result = smol::block_on(connect_with(
        keepalive_config("ws://127.0.0.1:9/keepalive"),
        options,
    ));
    match result {
        Err(Error::Tls(e)) => assert!(e.contains("extra root certificate"), "{e}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

async fn refused_port_stops_cleanly(options: Options) {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("ws://127.0.0.1:{port}/keepalive");
    let connecting = async { Some(connect_with(keepalive_config(&url), options.seed(7)).await) };
    let timeout = async {
        async_io::Timer::after(Duration::from_secs(10)).await;
        None
    };
    match future::or(connecting, timeout)
        .await
        .expect("connect resolves")
    {
        Err(Error::Stopped(StopReason::ReconnectAttemptsExhausted {
            attempts,
            last_error,
        })) => {
            assert_eq!(attempts, 2);
            assert!(last_error.contains("connect failed"), "{last_error}");
            assert!(last_error.contains("TCP connect"), "{last_error}");
        }
        other => panic!("expected attempts exhausted, got {other:?}"),
    }
}

#[async_std::test]
async fn a_refused_port_ends_in_a_clean_stop_under_async_std() {
    refused_port_stops_cleanly(Options::default()).await;
}

#[test]
fn a_refused_port_ends_in_a_clean_stop_under_smol() {
    smol::block_on(refused_port_stops_cleanly(smol_options()));
}
