//! The HTTP side: one function that performs the core's [`HttpRequest`] with reqwest and hands back
//! [`Event::HttpResponse`] or [`Event::HttpFailed`]. No retry, no status interpretation: the core does that.
//!
//! reqwest runs on tokio's reactor and timers. [`perform`] wraps the request in [`async_compat::Compat`],
//! which enters a tokio context while the future is polled (an ambient tokio runtime if there is one,
//! otherwise one global current-thread runtime on one extra thread). The future itself is polled by the
//! async-std or smol executor and can be dropped (cancelled) at any time. The measured cost is in README.md.

use genesys_keepalive::{Event, Headers, HttpRequest, HttpResponse, Method};

use crate::Error;

/// A reqwest client on the shared rustls configuration. Without `allow_insecure` it refuses `http://`.
pub(crate) fn client(
    tls: rustls::ClientConfig,
    allow_insecure: bool,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(!allow_insecure)
        .user_agent(concat!(
            "genesys-keepalive-async-std/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| Error::Tls(error_chain(&e)))
}

/// The reqwest client, built on the first request: a keepalive-frame connection without credentials never
/// makes one, and each client costs memory (a connection pool, a resolver) per connection.
pub(crate) struct LazyClient {
    tls: std::sync::Arc<rustls::ClientConfig>,
    allow_insecure: bool,
    client: Option<reqwest::Client>,
}

impl LazyClient {
    pub(crate) fn new(tls: std::sync::Arc<rustls::ClientConfig>, allow_insecure: bool) -> Self {
        LazyClient {
            tls,
            allow_insecure,
            client: None,
        }
    }

    /// The client (a cheap clone of a shared one), built now if this is the first request.
    pub(crate) fn get(&mut self) -> Result<reqwest::Client, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = client((*self.tls).clone(), self.allow_insecure).map_err(|e| e.to_string())?;
        self.client = Some(c.clone());
        Ok(c)
    }
}

/// Sends `req` and returns the event that reports its outcome.
pub(crate) async fn perform(
    client: &reqwest::Client,
    allow_insecure: bool,
    req: HttpRequest,
) -> Event {
    async_compat::Compat::new(send(client, allow_insecure, req)).await
}

/// The request itself; needs a tokio context (see [`perform`]).
async fn send(client: &reqwest::Client, allow_insecure: bool, req: HttpRequest) -> Event {
    let request = req.id;
    let failed = |error: String| Event::HttpFailed { request, error };
    let allowed =
        req.url.starts_with("https://") || (allow_insecure && req.url.starts_with("http://"));
    if !allowed {
        return failed(format!(
            "refusing `{}`: not https:// (set allow_insecure for a local gateway)",
            req.url
        ));
    }
    let method = match req.method {
        Method::Get => reqwest::Method::GET,
        Method::Head => reqwest::Method::HEAD,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
    };
    let mut builder = client.request(method, &req.url).timeout(req.timeout);
    for (name, value) in req.headers.iter() {
        builder = builder.header(name, value);
    }
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let response = match builder.send().await {
        Ok(r) => r,
        Err(e) => return failed(error_chain(&e)),
    };
    let status = response.status().as_u16();
    let mut headers = Headers::new();
    for (name, value) in response.headers() {
        if let Ok(v) = value.to_str() {
            headers.push(name.as_str(), v);
        }
    }
    match response.bytes().await {
        Ok(body) => Event::HttpResponse(HttpResponse {
            request,
            status,
            headers,
            body: body.to_vec(),
        }),
        Err(e) => failed(format!(
            "reading the body of HTTP {status}: {}",
            error_chain(&e)
        )),
    }
}

/// An error and its sources, `: `-separated (reqwest and rustls hide the cause in the source chain).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesys_keepalive::RequestId;
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

    #[test]
    fn http_is_refused_unless_insecure_is_allowed() {
        crate::tls::install_provider();
        let c = client(crate::tls::client_config(&[]).expect("TLS"), false).expect("client");
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
        crate::tls::install_provider();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let c = client(crate::tls::client_config(&[]).expect("TLS"), true).expect("client");
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
