//! The gateway's HTTP side: accept loop, TLS, routing, REST endpoints, WebSocket handshakes
//! and the `/testkit/` control endpoints.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::socket::{self, SocketGuard};
use super::{
    Channel, Endpoint, Fault, OutKind, RequestRecord, Scripted, Shared, SocketCmd, SocketEntry,
};
use crate::tls::Conn;
use crate::util;

type Resp = Response<Full<Bytes>>;

/// Request bodies above this are refused.
const MAX_BODY: usize = 4 << 20;

/// Accepts connections until `stop` flips (or its sender goes away).
pub(super) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(serve_conn(shared.clone(), tcp, acceptor.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "testkit gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    tracing::info!(port = shared.port, "testkit gateway stopped");
}

async fn serve_conn(
    shared: Arc<Shared>,
    tcp: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let conn = match acceptor {
        None => Conn::Plain(tcp),
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "testkit gateway: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("testkit gateway: TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "testkit gateway: HTTP connection ended with an error");
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = route(&shared, req, &method, &path).await;
    let status = resp.status().as_u16();
    // Never log headers or bodies: they carry credentials and tokens.
    tracing::debug!(%method, %path, status, "testkit gateway request");
    if !path.starts_with("/testkit/") {
        let at = shared.started.elapsed();
        let limit = shared.config.log_limit;
        shared.update(|s| {
            util::push_bounded(
                &mut s.stats.requests,
                limit,
                RequestRecord {
                    method: method.to_string(),
                    path: path.clone(),
                    status,
                    at,
                },
            )
        });
    }
    resp
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>, method: &Method, path: &str) -> Resp {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (&Method::POST, ["oauth", "token"]) => token(shared, req).await,
        (&Method::POST, ["api", "v2", "notifications", "channels"]) => create_channel(shared, req),
        (&Method::PUT, ["api", "v2", "notifications", "channels", id, "subscriptions"]) => {
            subscribe(shared, req, id, true).await
        }
        (&Method::POST, ["api", "v2", "notifications", "channels", id, "subscriptions"]) => {
            subscribe(shared, req, id, false).await
        }
        (&Method::GET, ["api", "v2", "notifications", "channels", id, "subscriptions"]) => {
            list_subscriptions(shared, req.headers(), id)
        }
        (&Method::HEAD, ["api", "v2", "notifications", "channels", id]) => {
            head_channel(shared, req.headers(), id)
        }
        (&Method::GET, ["channels", id]) => websocket(shared, req, Some(id.to_string())),
        (&Method::GET, ["keepalive"]) => websocket(shared, req, None),
        (_, ["testkit", ..]) => control(shared, req, method, &segs[1..]).await,
        _ => json_resp(
            404,
            json!({"message": format!("no route for {method} {path}"), "code": "not.found", "status": 404}),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

fn json_resp(status: u16, body: Value) -> Resp {
    text_resp(status, body.to_string())
}

fn text_resp(status: u16, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn empty_resp(status: u16) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// The next scripted answer for `endpoint`, if one is queued.
fn take_script(shared: &Shared, endpoint: Endpoint) -> Option<Resp> {
    let scripted: Scripted = shared.update(|s| {
        let next = s.scripts.get_mut(&endpoint).and_then(|q| q.pop_front());
        if let Some(n) = &next {
            s.stats.scripted_served += 1;
            if let Some(secs) = n.retry_after {
                s.stats.last_http_retry_after_served = Some(secs);
            }
        }
        next
    })?;
    tracing::debug!(
        ?endpoint,
        status = scripted.status,
        "testkit gateway: scripted answer"
    );
    let mut r = text_resp(scripted.status, scripted.body);
    if let Some(secs) = scripted.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(r)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bearer {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token the gateway issued that has not expired.
    Valid,
    /// An unknown or expired token (counted in `requests_with_expired_token`).
    Invalid,
}

fn bearer(shared: &Shared, headers: &HeaderMap) -> Bearer {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Bearer::Missing;
    };
    let token = match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Bearer::Missing,
    };
    let now = Instant::now();
    let valid = shared.read(|s| s.tokens.get(token).is_some_and(|exp| *exp > now));
    if valid {
        Bearer::Valid
    } else {
        shared.update(|s| s.stats.requests_with_expired_token += 1);
        Bearer::Invalid
    }
}

/// The client the request's bearer token was issued to, if any.
fn bearer_client(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    shared.read(|s| s.token_clients.get(token.trim()).cloned())
}

fn unauthorized(b: Bearer) -> Resp {
    let (message, code) = match b {
        Bearer::Missing => (
            "No authentication bearer token specified in authorization header.",
            "authentication.required",
        ),
        _ => ("Invalid login credentials.", "bad.credentials"),
    };
    json_resp(
        401,
        json!({"message": message, "code": code, "status": 401, "contextId": util::random_uuid()}),
    )
}

fn not_found_channel(id: &str) -> Resp {
    json_resp(
        404,
        json!({
            "message": format!("The requested channel {id} could not be found."),
            "code": "not.found",
            "status": 404,
            "contextId": util::random_uuid(),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// OAuth

async fn token(shared: &Shared, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await.unwrap_or_default();
    shared.update(|s| s.stats.token_requests += 1);
    if let Some(r) = take_script(shared, Endpoint::Token) {
        if !r.status().is_success() {
            shared.update(|s| s.stats.token_failures += 1);
        }
        return r;
    }
    let fail = |status: u16, error: &str, description: &str| {
        shared.update(|s| s.stats.token_failures += 1);
        json_resp(
            status,
            json!({"error": error, "description": description, "error_description": description}),
        )
    };
    let creds_ok = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
        })
        .filter(|(id, secret)| shared.read(|s| s.clients.get(id) == Some(secret)))
        .map(|(id, _)| id);
    let Some(client) = creds_ok else {
        return fail(401, "invalid_client", "client authentication failed");
    };
    let form_ok = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form_ok {
        return fail(
            400,
            "invalid_request",
            "content type must be application/x-www-form-urlencoded",
        );
    }
    let grant = util::parse_form(&body)
        .into_iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v);
    if grant.as_deref() != Some("client_credentials") {
        return fail(
            400,
            "unauthorized_client",
            "the client is not authorized to use this grant type",
        );
    }
    let token = util::random_hex(4);
    let lifetime = shared.config.token_lifetime;
    shared.update(|s| {
        let now = Instant::now();
        // Forget long-expired tokens so the table stays small; they still count as unknown.
        s.tokens
            .retain(|_, exp| *exp + Duration::from_secs(3600) > now);
        let super::State {
            tokens,
            token_clients,
            ..
        } = s;
        token_clients.retain(|t, _| tokens.contains_key(t));
        s.tokens.insert(token.clone(), now + lifetime);
        s.token_clients.insert(token.clone(), client.clone());
        s.stats.tokens_issued += 1;
        if let Some(c) = s.client_stats(Some(&client)) {
            c.tokens_issued += 1;
        }
    });
    json_resp(
        200,
        json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime.as_secs()}),
    )
}

// ---------------------------------------------------------------------------------------------
// Notifications API

fn create_channel(shared: &Shared, req: Request<Incoming>) -> Resp {
    let b = bearer(shared, req.headers());
    if let Some(r) = take_script(shared, Endpoint::CreateChannel) {
        return r;
    }
    if b != Bearer::Valid {
        return unauthorized(b);
    }
    let host_port = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(shared.port);
    let id = format!("streaming-0-{}", util::random_hex(2));
    let max = shared.config.max_channels.max(1);
    let client = bearer_client(shared, req.headers());
    let lifetime = shared.config.channel_lifetime;
    let (connect_base, evicted) = shared.update(|s| {
        let mut evicted = Vec::new();
        // Channels past their lifetime with no socket on them expire.
        let now = Instant::now();
        let in_use: HashSet<&str> = s
            .sockets
            .values()
            .filter_map(|e| e.channel.as_deref())
            .collect();
        s.channels.retain(|id, c| {
            in_use.contains(id.as_str()) || now.saturating_duration_since(c.last_used) < lifetime
        });
        // The limit is per client: one client's channels never evict another's.
        while s.channels.values().filter(|c| c.client == client).count() >= max {
            let lru = s
                .channels
                .iter()
                .filter(|(_, c)| c.client == client)
                .min_by_key(|(_, c)| c.last_used)
                .map(|(id, _)| id.clone());
            let Some(lru) = lru else { break };
            s.channels.remove(&lru);
            s.stats.channels_evicted += 1;
            evicted.extend(
                s.sockets
                    .values()
                    .filter(|e| e.channel.as_deref() == Some(lru.as_str()))
                    .map(|e| (lru.clone(), e.tx.clone())),
            );
        }
        s.channels.insert(
            id.clone(),
            Channel {
                topics: Vec::new(),
                last_used: Instant::now(),
                client: client.clone(),
            },
        );
        s.stats.channels_created += 1;
        if let Some(c) = s.client_stats(client.as_deref()) {
            c.channels_created += 1;
        }
        (s.connect_base.clone(), evicted)
    });
    for (old, tx) in evicted {
        let frame = json!({"result": "404", "message": format!("channel {old} was removed: too many channels")});
        let _ = tx.send(SocketCmd::Send(frame.to_string(), OutKind::Other));
    }
    let base = connect_base.unwrap_or_else(|| {
        let scheme = if shared.tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{host_port}")
    });
    let expires = util::iso8601(SystemTime::now() + Duration::from_secs(24 * 3600));
    json_resp(
        200,
        json!({
            "connectUri": format!("{}/channels/{id}", base.trim_end_matches('/')),
            "id": id,
            "expires": expires,
        }),
    )
}

async fn subscribe(shared: &Shared, req: Request<Incoming>, id: &str, replace: bool) -> Resp {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await;
    shared.update(|s| s.stats.subscription_requests += 1);
    let b = bearer(shared, &parts.headers);
    if let Some(r) = take_script(shared, Endpoint::Subscriptions) {
        return r;
    }
    if b != Bearer::Valid {
        return unauthorized(b);
    }
    if !shared.read(|s| s.channels.contains_key(id)) {
        return not_found_channel(id);
    }
    let bad_request = |message: String| {
        json_resp(
            400,
            json!({"message": message, "code": "bad.request", "status": 400, "contextId": util::random_uuid()}),
        )
    };
    let Some(body) = body else {
        return bad_request("request body too large".to_string());
    };
    let topics: Option<Vec<String>> =
        serde_json::from_slice::<Vec<Value>>(&body)
            .ok()
            .and_then(|items| {
                items
                    .iter()
                    .map(|i| i.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            });
    let Some(topics) = topics else {
        return bad_request("body must be a JSON array of {\"id\":\"<topic>\"}".to_string());
    };
    if let Some(t) = shared.read(|s| topics.iter().find(|t| s.forbidden.contains(*t)).cloned()) {
        return json_resp(
            403,
            json!({
                "message": format!("Unable to subscribe to topic {t}: missing permissions for this topic."),
                "code": "missing.permissions",
                "status": 403,
                "messageWithParams": "Unable to subscribe to topic {topic}: missing permissions for this topic.",
                "messageParams": {"topic": t},
                "contextId": util::random_uuid(),
                "details": [],
                "errors": [],
            }),
        );
    }
    let max = shared.config.max_topics_per_channel;
    let result = shared.update(|s| {
        let channel = s.channels.get_mut(id)?;
        let mut next = if replace {
            Vec::new()
        } else {
            channel.topics.clone()
        };
        for t in &topics {
            if !next.contains(t) {
                next.push(t.clone());
            }
        }
        if next.len() > max {
            return Some(Err(next.len()));
        }
        channel.topics = next.clone();
        channel.last_used = Instant::now();
        Some(Ok(next))
    });
    match result {
        None => not_found_channel(id),
        Some(Err(n)) => bad_request(format!(
            "a channel can have at most {max} topics; this request would make {n}"
        )),
        Some(Ok(all)) => json_resp(200, entities(&all)),
    }
}

fn entities(topics: &[String]) -> Value {
    json!({"entities": topics.iter().map(|t| json!({"id": t, "state": "Permitted"})).collect::<Vec<_>>()})
}

fn list_subscriptions(shared: &Shared, headers: &HeaderMap, id: &str) -> Resp {
    let b = bearer(shared, headers);
    if b != Bearer::Valid {
        return unauthorized(b);
    }
    match shared.read(|s| s.channels.get(id).map(|c| c.topics.clone())) {
        Some(topics) => json_resp(200, entities(&topics)),
        None => not_found_channel(id),
    }
}

fn head_channel(shared: &Shared, headers: &HeaderMap, id: &str) -> Resp {
    let b = bearer(shared, headers);
    if b != Bearer::Valid {
        return empty_resp(401);
    }
    if shared.read(|s| s.channels.contains_key(id)) {
        empty_resp(200)
    } else {
        empty_resp(404)
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket handshakes

fn websocket(shared: &Arc<Shared>, mut req: Request<Incoming>, channel: Option<String>) -> Resp {
    let b = bearer(shared, req.headers());
    if let Some(r) = take_script(shared, Endpoint::WebSocket) {
        return r;
    }
    if b == Bearer::Invalid {
        return unauthorized(b);
    }
    if let Some(id) = &channel {
        let known = shared.update(|s| match s.channels.get_mut(id) {
            Some(c) => {
                c.last_used = Instant::now();
                true
            }
            None => false,
        });
        if !known {
            return not_found_channel(id);
        }
    }
    let headers = req.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return json_resp(
            400,
            json!({"message": "expected a WebSocket upgrade", "status": 400}),
        );
    };
    if !is_upgrade || !version_ok {
        return json_resp(
            400,
            json!({"message": "expected a WebSocket upgrade (version 13)", "status": 400}),
        );
    }
    let accept = derive_accept_key(key.as_bytes());

    let (tx, rx) = mpsc::unbounded_channel();
    let token_client = bearer_client(shared, req.headers());
    let (socket_id, client) = shared.update(|s| {
        s.next_socket += 1;
        let socket_id = s.next_socket;
        let client = match &channel {
            Some(id) => s.channels.get(id).and_then(|c| c.client.clone()),
            None => token_client,
        };
        s.sockets.insert(
            socket_id,
            SocketEntry {
                channel: channel.clone(),
                client: client.clone(),
                tx,
            },
        );
        s.stats.sockets_opened += 1;
        s.stats.sockets_open_now += 1;
        if let Some(c) = s.client_stats(client.as_deref()) {
            c.sockets_opened += 1;
            c.sockets_open_now += 1;
        }
        (socket_id, client)
    });
    let guard = SocketGuard::new(shared.clone(), socket_id);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "testkit gateway: upgrade failed");
                return;
            }
        };
        let parts = match upgraded.downcast::<TokioIo<Conn>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!("testkit gateway: upgraded connection of an unexpected type");
                return;
            }
        };
        let ws = WebSocketStream::from_partially_read(
            parts.io.into_inner(),
            parts.read_buf.to_vec(),
            Role::Server,
            // tungstenite's default read buffer is 128 KiB, zero-filled before every read: with a soak's
            // thousand sockets that memset was a quarter of the process's CPU and most of its memory.
            // Larger frames still arrive whole (the buffer grows for them).
            Some(WebSocketConfig::default().read_buffer_size(4 * 1024)),
        )
        .await;
        socket::run(task_shared, ws, channel, client, rx, guard).await;
    });

    let mut r = empty_resp(101);
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// /testkit/ control endpoints

#[derive(Deserialize)]
struct PublishReq {
    topic: String,
    #[serde(default)]
    body: Value,
}

#[derive(Deserialize)]
struct FaultReq {
    kind: String,
    #[serde(default)]
    ms: u64,
}

#[derive(Deserialize)]
struct TopicReq {
    topic: String,
}

#[derive(Deserialize)]
struct ScriptReq {
    endpoint: Endpoint,
    responses: Vec<Scripted>,
}

async fn control(shared: &Shared, req: Request<Incoming>, method: &Method, rest: &[&str]) -> Resp {
    let body = read_body(req.into_body()).await.unwrap_or_default();
    let bad = |e: String| json_resp(400, json!({"error": e}));
    let ok = || json_resp(200, json!({"ok": true}));
    match (method, rest) {
        (&Method::GET, ["stats"]) => match serde_json::to_value(shared.stats()) {
            Ok(v) => json_resp(200, v),
            Err(e) => json_resp(500, json!({"error": e.to_string()})),
        },
        (&Method::POST, ["publish"]) => match serde_json::from_slice::<PublishReq>(&body) {
            Ok(p) => {
                let body = if p.body.is_null() { json!({}) } else { p.body };
                let seq = shared.publish(&p.topic, body);
                json_resp(200, json!({"seq": seq}))
            }
            Err(e) => bad(e.to_string()),
        },
        (&Method::POST, ["fault"]) => match serde_json::from_slice::<FaultReq>(&body) {
            Ok(f) => {
                let fault = match f.kind.to_ascii_lowercase().as_str() {
                    "none" => Fault::None,
                    "blackhole" => Fault::Blackhole,
                    "reset" => Fault::Reset,
                    "garbage" => Fault::Garbage,
                    "latency" => Fault::Latency(Duration::from_millis(f.ms)),
                    other => return bad(format!("unknown fault kind {other:?}")),
                };
                shared.set_fault(fault);
                ok()
            }
            Err(e) => bad(e.to_string()),
        },
        (&Method::POST, ["socket-closing"]) => {
            let n = shared.socket_closing();
            json_resp(200, json!({"sockets": n}))
        }
        (&Method::POST, ["expire-tokens"]) => {
            shared.expire_tokens();
            ok()
        }
        (&Method::POST, ["forbid-topic"]) => match serde_json::from_slice::<TopicReq>(&body) {
            Ok(t) => {
                shared.forbid_topic(&t.topic);
                ok()
            }
            Err(e) => bad(e.to_string()),
        },
        (&Method::POST, ["script"]) => match serde_json::from_slice::<ScriptReq>(&body) {
            Ok(s) => {
                shared.script(s.endpoint, s.responses);
                ok()
            }
            Err(e) => bad(e.to_string()),
        },
        _ => json_resp(404, json!({"error": "unknown testkit control endpoint"})),
    }
}
