//! The HTTP side: one function that performs the core's [`HttpRequest`] with reqwest and hands back
//! [`Event::HttpResponse`] or [`Event::HttpFailed`]. No retry, no status interpretation: the core does that.
//!
//! [`perform`] needs a tokio context while it is polled (reqwest runs on tokio's reactor and timers): the
//! tokio driver polls it in the connection's task as is; the async-std driver runs it as a task of
//! async-compat's tokio runtime (beside reqwest's HTTP connection tasks) and awaits its outcome.

use std::sync::{Arc, Mutex, OnceLock};

use genesys_keepalive::{Event, Headers, HttpRequest, HttpResponse, Method};

use crate::Error;

/// Idle HTTP connections the shared client keeps per host: as many as a fleet starts connections at once
/// (the CLI's waves), so that each wave's token requests reuse the last wave's HTTP connections. With 8, a
/// wave of 16 opened 8 and closed 8 again: 504 HTTP connects and 496 closes for 1,000 organisations'
/// tokens, against 16 connects with 16 (counted with `strace -c`).
pub const IDLE_PER_HOST: usize = 16;

/// A reqwest client on the shared rustls configuration, sending `user_agent`. The core only ever asks for
/// URLs its scheme policy allows; without `allow_insecure` the client is also `https_only`, so that a
/// redirect cannot lead it to `http://` behind the core's back.
pub fn client(
    tls: rustls::ClientConfig,
    allow_insecure: bool,
    user_agent: &'static str,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // The client is shared by every connection of the process: a fleet whose 1,000 members all fetch a
        // token at start would otherwise keep 1,000 idle HTTP connections to the login host (measured: about
        // 25 KiB and one descriptor each). Requests are rare (tokens, channels), so a few idle ones suffice.
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .https_only(!allow_insecure)
        .user_agent(user_agent)
        .build()
        .map_err(|e| Error::Tls(error_chain(&e)))
}

/// The reqwest client, built on the first request and then shared by every connection of the process with
/// the same TLS configuration, `allow_insecure` and user agent (one connection pool, one resolver): a
/// keepalive-frame connection without credentials never makes one.
pub struct LazyClient {
    tls: Arc<rustls::ClientConfig>,
    allow_insecure: bool,
    user_agent: &'static str,
    client: Option<reqwest::Client>,
}

impl LazyClient {
    /// A client to be built (or found) on the shared `tls` configuration, sending `user_agent`.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        allow_insecure: bool,
        user_agent: &'static str,
    ) -> Self {
        LazyClient {
            tls,
            allow_insecure,
            user_agent,
            client: None,
        }
    }

    /// The client (a cheap clone of the shared one), built now if this is the process's first request
    /// with these settings.
    pub fn get(&mut self) -> Result<reqwest::Client, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        type Key = (usize, bool, &'static str);
        static CLIENTS: OnceLock<Mutex<Vec<(Key, reqwest::Client)>>> = OnceLock::new();
        let key = (
            Arc::as_ptr(&self.tls) as usize,
            self.allow_insecure,
            self.user_agent,
        );
        let mut clients = CLIENTS
            .get_or_init(|| Mutex::new(Vec::new()))
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let c = match clients.iter().find(|(k, _)| *k == key) {
            Some((_, c)) => c.clone(),
            None => {
                let c = client((*self.tls).clone(), self.allow_insecure, self.user_agent)
                    .map_err(|e| e.to_string())?;
                clients.push((key, c.clone()));
                c
            }
        };
        self.client = Some(c.clone());
        Ok(c)
    }
}

/// Sends `req` and returns the event that reports its outcome. Needs a tokio context (see the module docs).
pub async fn perform(client: &reqwest::Client, req: HttpRequest) -> Event {
    let request = req.id;
    let failed = |error: String| Event::HttpFailed { request, error };
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
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

    fn test_client(allow_insecure: bool) -> reqwest::Client {
        crate::tls::install_provider();
        let tls = crate::tls::client_config(&[]).expect("TLS");
        client(tls, allow_insecure, "test").expect("client")
    }

    #[tokio::test]
    async fn a_redirect_to_http_is_refused_without_allow_insecure() {
        let c = test_client(false);
        // The core never asks for http:// here; the client refuses it all the same (redirects).
        match perform(&c, request("http://127.0.0.1:9/oauth/token")).await {
            Event::HttpFailed { request, error } => {
                assert_eq!(request, RequestId(1));
                assert!(error.contains("scheme is not allowed"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_http_failed() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let c = test_client(true);
        let url = format!("http://127.0.0.1:{port}/oauth/token");
        match perform(&c, request(&url)).await {
            Event::HttpFailed { error, .. } => assert!(!error.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
