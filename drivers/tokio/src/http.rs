//! The HTTP side: one function that performs the core's [`HttpRequest`] with reqwest and hands back
//! [`Event::HttpResponse`] or [`Event::HttpFailed`]. No retry, no status interpretation: the core does that.

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
            "genesys-keepalive-tokio/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| Error::Tls(error_chain(&e)))
}

/// Sends `req` and returns the event that reports its outcome.
pub(crate) async fn perform(
    client: &reqwest::Client,
    allow_insecure: bool,
    req: HttpRequest,
) -> Event {
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

/// An error and its sources, `: `-separated (reqwest hides the TLS cause in the source chain).
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
