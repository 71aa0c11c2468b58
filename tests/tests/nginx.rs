//! Real nginx (Debian's `nginx` package, started by the test on a loopback port) as a WebSocket reverse
//! proxy with a 2 s `proxy_read_timeout` in front of the testkit gateway, on both drivers: heartbeats
//! hold one socket for 30 s; a reload and a stop/start are recovered from within the backoff bound (see
//! `genesys_keepalive_testkit::nginx`). Skipped with a message when nginx is missing, except under
//! `CI=true`.

mod async_std_support;
mod tokio_support;

mod tokio {
    genesys_keepalive_testkit::nginx_suite!(super::tokio_support::Tokio::new());
}

mod async_std {
    genesys_keepalive_testkit::nginx_suite!(super::async_std_support::FuturesDriver::async_std());
}
