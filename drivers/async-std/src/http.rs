//! The HTTP side: the shared reqwest code (see [`genesys_keepalive_driver_common::http`]) under a tokio
//! context lent by `async-compat`.
//!
//! reqwest runs on tokio's reactor and timers. [`perform`] wraps the request in [`async_compat::Compat`],
//! which enters a tokio context while the future is polled (an ambient tokio runtime if there is one,
//! otherwise one global current-thread runtime on one extra thread). The future itself is polled by the
//! async-std or smol executor and can be dropped (cancelled) at any time. The measured cost is in README.md.

use genesys_keepalive::{Event, HttpRequest};
use genesys_keepalive_driver_common::http;

/// The user agent of this driver's reqwest client.
pub(crate) const USER_AGENT: &str =
    concat!("genesys-keepalive-async-std/", env!("CARGO_PKG_VERSION"));

/// Sends `req` and returns the event that reports its outcome.
pub(crate) async fn perform(
    client: &reqwest::Client,
    allow_insecure: bool,
    req: HttpRequest,
) -> Event {
    async_compat::Compat::new(http::perform(client, allow_insecure, req)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesys_keepalive::{Headers, Method, RequestId};
    use genesys_keepalive_driver_common::tls;
    use std::time::Duration;

    fn request(url: &str) -> HttpRequest {
        HttpRequest {
            id: RequestId(1),
            method: Method::Post,
            url: url.into(),
            headers: Headers::new(),
            body: None,
            timeout: Duration::from_secs(1),
        }
    }

    fn client(allow_insecure: bool) -> reqwest::Client {
        tls::install_provider();
        let config = tls::client_config(&[]).expect("TLS");
        http::client(config, allow_insecure, USER_AGENT).expect("client")
    }

    #[test]
    fn http_is_refused_unless_insecure_is_allowed() {
        let c = client(false);
        let event = futures_lite::future::block_on(perform(
            &c,
            false,
            request("http://127.0.0.1:9/oauth/token"),
        ));
        match event {
            Event::HttpFailed { request, error } => {
                assert_eq!(request, RequestId(1));
                assert!(error.contains("refusing"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refused_connection_is_http_failed_on_both_runtimes() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let c = client(true);
        let url = format!("http://127.0.0.1:{port}/oauth/token");
        for event in [
            async_std::task::block_on(perform(&c, true, request(&url))),
            smol::block_on(perform(&c, true, request(&url))),
        ] {
            match event {
                Event::HttpFailed { error, .. } => assert!(!error.is_empty()),
                other => panic!("{other:?}"),
            }
        }
    }
}
