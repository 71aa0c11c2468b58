//! End-to-end tests of the testkit gateway and proxy with real clients over loopback sockets:
//! reqwest for HTTP, tokio-tungstenite for WebSockets.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use genesys_keepalive_testkit::{Endpoint, Fault, Gateway, Proxy, ProxyMode, Scripted};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

const SHORT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// OAuth

#[tokio::test]
async fn token_ok_bad_credentials_and_wrong_grant() {
    let gw = gateway(|c| c.token_lifetime = Duration::from_secs(600));
    let client = http();
    let base = gw.base_url();

    let (status, body, _) = token_with(&client, &base, "test-client", "test-secret").await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 600);
    assert!(body["access_token"].as_str().unwrap().len() >= 32);

    let (status, body, _) = token_with(&client, &base, "test-client", "wrong").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(body["description"].is_string());
    assert!(body["error_description"].is_string());

    let resp = client
        .post(format!("{base}/oauth/token"))
        .basic_auth("test-client", Some("test-secret"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");

    let s = gw.stats();
    assert_eq!(s.token_requests, 3);
    assert_eq!(s.tokens_issued, 1);
    assert_eq!(s.token_failures, 2);
    let statuses: Vec<u16> = s.requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 401, 400]);
    assert!(s
        .requests
        .iter()
        .all(|r| r.path == "/oauth/token" && r.method == "POST"));
    assert!(s.requests.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn scripted_429_with_retry_after_then_normal() {
    let gw = gateway(|_| {});
    let client = http();
    let base = gw.base_url();
    gw.script_http(Endpoint::Token, vec![Scripted::too_many_requests(7)]);
    gw.script_http(
        Endpoint::CreateChannel,
        vec![Scripted::new(503, r#"{"message":"unavailable"}"#).with_retry_after(2)],
    );

    let (status, body, headers) = token_with(&client, &base, "test-client", "test-secret").await;
    assert_eq!(status, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    assert_eq!(body["status"], 429);
    assert_eq!(gw.stats().last_http_retry_after_served, Some(7));

    let tok = token(&client, &base).await; // script used up: normal again
    let (status, _) = create_channel(&client, &base, &tok).await;
    assert_eq!(status, 503);
    let (status, _) = create_channel(&client, &base, &tok).await;
    assert_eq!(status, 200);

    // The WebSocket handshake can be scripted too.
    gw.script_http(Endpoint::WebSocket, vec![Scripted::too_many_requests(4)]);
    let (id, uri) = channel(&client, &base, &tok).await;
    match tokio_tungstenite::connect_async(uri.as_str()).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            assert_eq!(resp.headers().get("retry-after").unwrap(), "4");
        }
        other => panic!("expected a scripted 429, got {:?}", other.map(|_| ())),
    }
    let _ws = connect(&uri).await;

    // And the subscriptions endpoint.
    gw.script_http(Endpoint::Subscriptions, vec![Scripted::new(504, "{}")]);
    assert_eq!(
        subscribe(&client, &base, &tok, &id, &["t"], true).await.0,
        504
    );
    assert_eq!(
        subscribe(&client, &base, &tok, &id, &["t"], true).await.0,
        200
    );

    let s = gw.stats();
    assert_eq!(s.scripted_served, 4);
    assert_eq!(s.last_http_retry_after_served, Some(4));
    assert_eq!(s.sockets_opened, 1);
    assert_eq!(s.subscription_requests, 2);
    assert_eq!(s.token_failures, 1);
    assert_eq!(s.tokens_issued, 1);
    assert_eq!(s.channels_created, 2);
}

#[tokio::test]
async fn expired_and_unknown_tokens_are_refused_and_counted() {
    let gw = gateway(|_| {});
    let client = http();
    let base = gw.base_url();
    let tok = token(&client, &base).await;
    let (status, _) = create_channel(&client, &base, &tok).await;
    assert_eq!(status, 200);
    assert_eq!(gw.stats().requests_with_expired_token, 0);

    gw.expire_tokens();
    let (status, body) = create_channel(&client, &base, &tok).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(gw.stats().requests_with_expired_token, 1);

    let (status, _) = create_channel(&client, &base, "not-a-token").await;
    assert_eq!(status, 401);
    assert_eq!(gw.stats().requests_with_expired_token, 2);

    // No token at all: refused but not counted as presenting a bad one.
    let resp = client
        .post(format!("{base}/api/v2/notifications/channels"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(gw.stats().requests_with_expired_token, 2);

    // A handshake presenting the expired token is refused and counted.
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(
        gw.ws_url("/keepalive").as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {tok}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected a 401 handshake, got {:?}", other.map(|_| ())),
    }
    assert_eq!(gw.stats().requests_with_expired_token, 3);

    // A fresh token works again.
    let fresh = token(&client, &base).await;
    assert_eq!(create_channel(&client, &base, &fresh).await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// Notifications API

#[tokio::test]
async fn channel_subscribe_head_and_ping_pong() {
    let gw = gateway(|_| {});
    let client = http();
    let base = gw.base_url();
    let tok = token(&client, &base).await;
    let (status, body) = create_channel(&client, &base, &tok).await;
    assert_eq!(status, 200);
    let id = body["id"].as_str().unwrap().to_string();
    let uri = body["connectUri"].as_str().unwrap();
    assert_eq!(uri, format!("ws://127.0.0.1:{}/channels/{id}", gw.port()));
    let expires = body["expires"].as_str().unwrap();
    assert_eq!(expires.len(), 24, "{expires}");
    assert!(
        expires.ends_with('Z') && &expires[10..11] == "T",
        "{expires}"
    );

    let head = |id: String| {
        let client = client.clone();
        let url = format!("{base}/api/v2/notifications/channels/{id}");
        let tok = tok.clone();
        async move {
            client
                .head(url)
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(head(id.clone()).await, 200);
    assert_eq!(head("streaming-0-nope".into()).await, 404);

    let (status, body) = subscribe(&client, &base, &tok, &id, &["a.b", "c.d"], true).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"entities": [{"id": "a.b", "state": "Permitted"}, {"id": "c.d", "state": "Permitted"}]})
    );
    let (status, _) = subscribe(&client, &base, &tok, &id, &["e.f", "a.b"], false).await;
    assert_eq!(status, 200);
    assert_eq!(
        gw.channel_topics(&id).unwrap(),
        vec!["a.b".to_string(), "c.d".into(), "e.f".into()]
    );
    let (status, _) = subscribe(&client, &base, &tok, &id, &["x.y"], true).await;
    assert_eq!(status, 200);
    assert_eq!(gw.channel_topics(&id).unwrap(), vec!["x.y".to_string()]);
    let (status, _) = subscribe(&client, &base, &tok, "streaming-0-nope", &["x.y"], true).await;
    assert_eq!(status, 404);
    assert_eq!(gw.stats().subscription_requests, 4);

    let mut ws = connect(uri).await;
    ping(&mut ws).await;
    let pong = next_json(&mut ws, SHORT).await.expect("pong");
    assert!(is_pong(&pong), "{pong}");
    let s = gw.stats();
    assert_eq!(s.pings_received, 1);
    assert_eq!(s.sockets_opened, 1);
    wait_stats(&gw, |s| s.pongs_sent == 1).await;

    // A clean client close is recorded and the socket leaves the table.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "Graceful shutdown".into(),
    }))
    .await
    .unwrap();
    wait_stats(&gw, |s| s.sockets_open_now == 0).await;
    assert!(gw
        .stats()
        .close_codes
        .contains(&(1000, "Graceful shutdown".to_string())));
}

#[tokio::test]
async fn unknown_channel_handshake_is_404() {
    let gw = gateway(|_| {});
    match tokio_tungstenite::connect_async(gw.ws_url("/channels/streaming-0-missing")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    let s = gw.stats();
    assert_eq!(s.sockets_opened, 0);
    assert_eq!(s.requests.last().unwrap().status, 404);
}

#[tokio::test]
async fn forbidden_topic_makes_the_whole_request_403() {
    let gw = gateway(|_| {});
    gw.forbid_topic("v2.users.secret.presence");
    let client = http();
    let base = gw.base_url();
    let tok = token(&client, &base).await;
    let (id, _) = channel(&client, &base, &tok).await;
    let (status, body) = subscribe(
        &client,
        &base,
        &tok,
        &id,
        &["v2.users.ok.presence", "v2.users.secret.presence"],
        true,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "missing.permissions");
    assert_eq!(body["status"], 403);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("v2.users.secret.presence"));
    assert_eq!(gw.channel_topics(&id).unwrap(), Vec::<String>::new());

    gw.allow_topic("v2.users.secret.presence");
    let (status, _) = subscribe(
        &client,
        &base,
        &tok,
        &id,
        &["v2.users.secret.presence"],
        true,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn twenty_first_channel_evicts_the_least_recently_used() {
    let gw = gateway(|_| {});
    let client = http();
    let base = gw.base_url();
    let tok = token(&client, &base).await;
    let mut ids = vec![channel(&client, &base, &tok).await.0];
    // A socket on the oldest channel (connecting counts as a use, so do it first).
    let mut doomed = connect(&format!("ws://127.0.0.1:{}/channels/{}", gw.port(), ids[0])).await;
    wait_stats(&gw, |s| s.sockets_open_now == 1).await;
    for _ in 1..20 {
        ids.push(channel(&client, &base, &tok).await.0);
    }
    let (newest, _) = channel(&client, &base, &tok).await;
    // Its socket hears that the channel is gone, as Genesys says it may.
    let gone = next_json(&mut doomed, SHORT).await.expect("404 frame");
    assert_eq!(gone["result"], "404");
    assert!(gone["message"].as_str().unwrap().contains(&ids[0]));
    let live = gw.channel_ids();
    assert_eq!(live.len(), 20);
    assert!(!live.contains(&ids[0]));
    assert!(live.contains(&newest));

    // Using a channel protects it: touch ids[1], and ids[2] goes next.
    let (status, _) = subscribe(&client, &base, &tok, &ids[1], &["t"], true).await;
    assert_eq!(status, 200);
    channel(&client, &base, &tok).await;
    let live = gw.channel_ids();
    assert_eq!(live.len(), 20);
    assert!(live.contains(&ids[1]));
    assert!(!live.contains(&ids[2]));
    assert_eq!(gw.stats().channels_evicted, 2);
    assert_eq!(gw.stats().channels_created, 22);
    let status = client
        .head(format!("{base}/api/v2/notifications/channels/{}", ids[2]))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
}

#[tokio::test]
async fn unused_channels_expire_after_their_lifetime_and_the_logs_stay_bounded() {
    let gw = gateway(|c| {
        c.channel_lifetime = Duration::from_millis(300);
        c.log_limit = 20;
    });
    let client = http();
    let base = gw.base_url();
    let tok = token(&client, &base).await;
    let (abandoned, _) = channel(&client, &base, &tok).await;
    let (held, _) = channel(&client, &base, &tok).await;
    let _ws = connect(&format!("ws://127.0.0.1:{}/channels/{held}", gw.port())).await;
    wait_stats(&gw, |s| s.sockets_open_now == 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Expiry is checked when a channel is created: the abandoned one goes, the one with a socket stays.
    let (fresh, _) = channel(&client, &base, &tok).await;
    let live = gw.channel_ids();
    assert!(!live.contains(&abandoned), "{live:?}");
    assert!(live.contains(&held) && live.contains(&fresh), "{live:?}");
    let head = |id: String| {
        let req = client.head(format!("{base}/api/v2/notifications/channels/{id}"));
        let req = req.bearer_auth(&tok);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(head(abandoned.clone()).await, 404);
    assert_eq!(head(held.clone()).await, 200);
    assert_eq!(gw.stats().channels_evicted, 0, "expiry is not eviction");

    // 40 more requests: the log keeps about the last 20 of them, the counters all.
    for _ in 0..40 {
        head(fresh.clone()).await;
    }
    let stats = gw.stats();
    assert!(stats.requests.len() <= 20, "{}", stats.requests.len());
    assert!(stats.requests.len() >= 18, "{}", stats.requests.len());
    assert!(stats.requests.iter().all(|r| r.method == "HEAD"));
}

#[tokio::test]
async fn several_clients_each_with_their_own_channels_and_counters() {
    let gw = gateway(|c| c.max_channels = 2);
    gw.add_client("org-a", "secret-a");
    gw.add_client("org-b", "secret-b");
    let client = http();
    let base = gw.base_url();
    let (status, _, _) = token_with(&client, &base, "org-a", "secret-b").await;
    assert_eq!(status, 401, "a secret is good only for its own client");
    let tok = |id: &'static str, secret: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (status, body, _) = token_with(&client, &base, id, secret).await;
            assert_eq!(status, 200, "{id}");
            body["access_token"].as_str().unwrap().to_string()
        }
    };
    let (a, b) = (
        tok("org-a", "secret-a").await,
        tok("org-b", "secret-b").await,
    );
    let default = tok("test-client", "test-secret").await;
    // The channel limit is per client: b's channels never evict a's.
    let a1 = channel(&client, &base, &a).await.0;
    for _ in 0..3 {
        channel(&client, &base, &b).await;
    }
    assert!(gw.channel_ids().contains(&a1));
    let mut ws = connect(&format!("ws://127.0.0.1:{}/channels/{a1}", gw.port())).await;
    let (status, _) = subscribe(&client, &base, &a, &a1, &["v2.a"], true).await;
    assert_eq!(status, 200);
    wait_stats(&gw, |s| {
        s.per_client
            .get("org-a")
            .is_some_and(|c| c.sockets_open_now == 1)
    })
    .await;
    gw.publish("v2.a", json!({}));
    next_json(&mut ws, SHORT).await.expect("the notification");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    wait_stats(&gw, |s| s.per_client["org-a"].sockets_open_now == 0).await;
    let s = gw.stats();
    let (pa, pb) = (&s.per_client["org-a"], &s.per_client["org-b"]);
    assert_eq!(
        (pa.tokens_issued, pa.channels_created, pa.sockets_opened),
        (1, 1, 1)
    );
    assert_eq!(pa.notifications_sent, 1);
    assert_eq!(pa.close_codes, vec![(1000, "bye".to_string())]);
    assert_eq!(
        (pb.tokens_issued, pb.channels_created, pb.sockets_opened),
        (1, 3, 0)
    );
    assert_eq!(s.per_client["test-client"].tokens_issued, 1);
    assert_eq!(s.channels_evicted, 1);
    assert!(!default.is_empty());
}

#[tokio::test]
async fn server_heartbeat_arrives() {
    let gw = gateway(|c| c.server_heartbeat = Duration::from_millis(100));
    let (_client, _id, mut ws) = connected_channel(&gw, &[]).await;
    for _ in 0..2 {
        let hb = next_json(&mut ws, SHORT).await.expect("heartbeat");
        assert_eq!(
            hb,
            json!({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}})
        );
    }
    assert!(gw.stats().heartbeats_sent >= 2);
}

#[tokio::test]
async fn publish_reaches_subscribed_sockets_with_correlation_ids() {
    let gw = gateway(|_| {});
    let topic = "v2.users.u1.presence";
    let (client, id, mut ws) = connected_channel(&gw, &[topic]).await;
    // A second socket on the same channel (make before break) gets the same notifications.
    let uri = format!("ws://127.0.0.1:{}/channels/{id}", gw.port());
    let mut ws2 = connect(&uri).await;
    // A socket on another channel that is not subscribed gets nothing.
    let tok = token(&client, &gw.base_url()).await;
    let (_, other_uri) = channel(&client, &gw.base_url(), &tok).await;
    let mut ws3 = connect(&other_uri).await;
    wait_stats(&gw, |s| s.sockets_open_now == 3).await;

    assert_eq!(gw.publish("v2.other.topic", json!({"x": 0})), 1);
    let seq = gw.publish(topic, json!({"presence": "Available"}));
    assert_eq!(seq, 2);
    let seq3 = gw.publish(topic, json!({"presence": "Busy"}));
    assert_eq!(seq3, 3);

    let n1 = next_json(&mut ws, SHORT).await.expect("notification");
    assert_eq!(n1["topicName"], topic);
    assert_eq!(n1["version"], "2");
    assert_eq!(n1["eventBody"]["seq"], 2);
    assert_eq!(n1["eventBody"]["presence"], "Available");
    let c1 = n1["metadata"]["CorrelationId"]
        .as_str()
        .unwrap()
        .to_string();
    let n2 = next_json(&mut ws, SHORT).await.expect("notification");
    assert_eq!(n2["eventBody"]["seq"], 3);
    let c2 = n2["metadata"]["CorrelationId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(c1, c2);

    let m1 = next_json(&mut ws2, SHORT).await.unwrap();
    assert_eq!(m1["metadata"]["CorrelationId"], c1.as_str());
    assert!(next_json(&mut ws3, Duration::from_millis(300))
        .await
        .is_none());

    wait_stats(&gw, |s| s.notifications_sent == 4).await;
    assert_eq!(gw.stats().notifications_published, 3);
}

#[tokio::test]
async fn idle_socket_is_closed_1001_and_a_pinging_one_is_not() {
    let gw = gateway(|c| c.idle_timeout = Duration::from_millis(600));
    let started = Instant::now(); // before the idle socket opens: a safe lower bound
    let (_c, id, mut idle) = connected_channel(&gw, &[]).await;
    let mut busy = connect(&format!("ws://127.0.0.1:{}/channels/{id}", gw.port())).await;

    let pinger = tokio::spawn(async move {
        for _ in 0..10 {
            ping(&mut busy).await;
            let pong = next_json(&mut busy, SHORT).await.expect("pong");
            assert!(is_pong(&pong));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        busy
    });

    match next_msg(&mut idle, SHORT).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1001);
            assert_eq!(f.reason.as_str(), "idle timeout");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(600));
    let busy = pinger.await.unwrap();
    drop(busy);
    let s = gw.stats();
    assert_eq!(s.idle_closes, 1, "{s:?}");
    assert_eq!(s.pings_received, 10);
}

#[tokio::test]
async fn socket_closing_announces_then_closes_after_grace() {
    let gw = gateway(|c| c.socket_closing_grace = Duration::from_millis(300));
    let (_c, _id, mut ws) = connected_channel(&gw, &[]).await;
    let started = Instant::now();
    assert_eq!(gw.socket_closing(), 1);
    let frame = next_json(&mut ws, SHORT).await.expect("socket_closing");
    assert_eq!(frame["topicName"], "v2.system.socket_closing");
    assert!(frame["eventBody"]["message"].is_string());
    // The socket still works during the grace period.
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
    match next_msg(&mut ws, SHORT).await {
        Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    let s = gw.stats();
    assert_eq!(s.socket_closing_sent, 1);
    assert_eq!(s.planned_closes, 1);
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn blackhole_keeps_tcp_open_but_answers_nothing() {
    let gw = gateway(|c| c.server_heartbeat = Duration::from_millis(100));
    let (_c, id, mut ws) = connected_channel(&gw, &[]).await;
    gw.set_fault(Fault::Blackhole);
    wait_stats(&gw, |s| s.sockets_blackholed == 1).await;
    let beats = gw.stats().heartbeats_sent;
    // Drain anything already in flight, then silence.
    while next_msg(&mut ws, Duration::from_millis(150))
        .await
        .is_some()
    {}
    ping(&mut ws).await;
    assert!(
        next_msg(&mut ws, Duration::from_millis(400))
            .await
            .is_none(),
        "a blackholed socket must stay silent (and next_msg panics if it closed)"
    );
    let s = gw.stats();
    assert_eq!(s.sockets_open_now, 1);
    assert_eq!(s.pings_received, 0);
    assert_eq!(s.heartbeats_sent, beats);

    // New sockets are not affected.
    let mut fresh = connect(&format!("ws://127.0.0.1:{}/channels/{id}", gw.port())).await;
    ping(&mut fresh).await;
    let mut got_pong = false;
    while let Some(v) = next_json(&mut fresh, SHORT).await {
        if is_pong(&v) {
            got_pong = true;
            break;
        }
    }
    assert!(got_pong);

    // A reset releases the blackholed socket: the client sees an abrupt end, no close frame.
    gw.set_fault(Fault::Reset);
    let end = tokio::time::timeout(SHORT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return Err(format!("close frame {f:?}")),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok(()),
            }
        }
    })
    .await
    .expect("socket ends");
    assert_eq!(end, Ok(()));
}

#[tokio::test]
async fn reset_drops_sockets_without_close_frame() {
    let gw = gateway(|_| {});
    let (_c, _id, mut ws) = connected_channel(&gw, &[]).await;
    gw.set_fault(Fault::Reset);
    let outcome = tokio::time::timeout(SHORT, ws.next())
        .await
        .expect("socket reacts");
    match outcome {
        Some(Err(e)) => {
            let text = e.to_string();
            assert!(
                matches!(
                    e,
                    tungstenite::Error::Io(_) | tungstenite::Error::Protocol(_)
                ),
                "{text}"
            );
        }
        None => {}
        Some(Ok(m)) => panic!("expected an abrupt end, got {m:?}"),
    }
    wait_stats(&gw, |s| s.sockets_open_now == 0 && s.sockets_reset == 1).await;
    assert!(gw.stats().close_codes.is_empty());
}

#[tokio::test]
async fn latency_delays_every_outbound_frame() {
    let gw = gateway(|_| {});
    let (_c, _id, mut ws) = connected_channel(&gw, &["t"]).await;
    gw.set_fault(Fault::Latency(Duration::from_millis(300)));
    let t0 = Instant::now();
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
    assert!(t0.elapsed() >= Duration::from_millis(300));

    let t1 = Instant::now();
    gw.publish("t", json!({}));
    assert_eq!(next_json(&mut ws, SHORT).await.unwrap()["topicName"], "t");
    assert!(t1.elapsed() >= Duration::from_millis(300));

    gw.set_fault(Fault::None);
    assert_eq!(gw.fault(), Fault::None);
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
}

#[tokio::test]
async fn garbage_burst_then_the_socket_still_works() {
    let gw = gateway(|_| {});
    let (_c, _id, mut ws) = connected_channel(&gw, &[]).await;
    gw.set_fault(Fault::Garbage);
    let mut texts = Vec::new();
    let (mut binary, mut pongs, mut big) = (0, 0, 0);
    while let Some(m) = next_msg(&mut ws, Duration::from_millis(500)).await {
        match m {
            Message::Text(t) if t.len() >= 2 * 1024 * 1024 => big += 1,
            Message::Text(t) => texts.push(t.to_string()),
            Message::Binary(_) => binary += 1,
            Message::Pong(_) => pongs += 1,
            other => panic!("unexpected {other:?}"),
        }
        if texts.len() + binary + pongs + big == 8 {
            break;
        }
    }
    assert_eq!((binary, pongs, big), (1, 1, 1));
    assert_eq!(texts.len(), 5, "{texts:?}");
    assert!(texts
        .iter()
        .any(|t| serde_json::from_str::<Value>(t).is_err()));
    assert!(texts.contains(&"[1,2,3]".to_string()));
    assert_eq!(gw.stats().garbage_frames_sent, 8);

    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
}

// ---------------------------------------------------------------------------------------------
// The seed's KEEP_ALIVE profile

fn keepalive_frame(seq: u64) -> Value {
    json!({
        "connectionId": "conn-1",
        "type": "KEEP_ALIVE",
        "seq": seq,
        "timestamp": 1_700_000_000_000u64,
        "intervalMatrix": {"current": 20000, "state": "STABLE", "nextExpected": 1_700_000_020_000u64},
        "sizeDirective": {"bytes": 250, "maxAllowed": 1024, "compression": false},
    })
}

#[tokio::test]
async fn keepalive_frames_are_acked_and_validated() {
    let gw = gateway(|_| {});
    let client = http();
    let tok = token(&client, &gw.base_url()).await;
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(
        gw.ws_url("/keepalive").as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {tok}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    ws.send(Message::text(keepalive_frame(5).to_string()))
        .await
        .unwrap();
    let ack = next_json(&mut ws, SHORT).await.unwrap();
    assert_eq!(ack["type"], "KEEP_ALIVE_ACK");
    assert_eq!(ack["seq"], 5);
    assert!(ack["timestamp"].as_u64().unwrap() > 1_600_000_000_000);

    let mut missing = keepalive_frame(6);
    missing.as_object_mut().unwrap().remove("sizeDirective");
    ws.send(Message::text(missing.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws, SHORT).await.unwrap()["seq"], 6);

    let mut big = keepalive_frame(7);
    big["padding"] = json!("p".repeat(1100));
    ws.send(Message::text(big.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws, SHORT).await.unwrap()["seq"], 7);

    // Not KEEP_ALIVE: ignored. A Genesys ping is not part of this profile either.
    ws.send(Message::text(r#"{"type":"OTHER"}"#)).await.unwrap();
    ping(&mut ws).await;
    assert!(next_json(&mut ws, Duration::from_millis(300))
        .await
        .is_none());

    let s = gw.stats();
    assert_eq!(s.keepalives_received, 3);
    assert_eq!(s.keepalives_invalid, 2);
    assert_eq!(s.acks_sent, 3);
    assert_eq!(s.pings_received, 0);
}

// ---------------------------------------------------------------------------------------------
// Control over HTTP, sync use, shutdown

#[tokio::test]
async fn http_control_endpoints_drive_the_gateway() {
    let gw = gateway(|c| c.socket_closing_grace = Duration::from_millis(200));
    let (client, _id, mut ws) = connected_channel(&gw, &["v2.t"]).await;
    let base = gw.base_url();

    let r: Value = client
        .post(format!("{base}/testkit/publish"))
        .json(&json!({"topic": "v2.t", "body": {"k": "v"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["seq"], 1);
    let n = next_json(&mut ws, SHORT).await.unwrap();
    assert_eq!(n["eventBody"], json!({"k": "v", "seq": 1}));

    let status = client
        .post(format!("{base}/testkit/fault"))
        .json(&json!({"kind": "latency", "ms": 250}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert_eq!(gw.fault(), Fault::Latency(Duration::from_millis(250)));
    let bad = client
        .post(format!("{base}/testkit/fault"))
        .json(&json!({"kind": "meteor"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(bad.as_u16(), 400);
    client
        .post(format!("{base}/testkit/fault"))
        .json(&json!({"kind": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(gw.fault(), Fault::None);

    let r: Value = client
        .post(format!("{base}/testkit/socket-closing"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["sockets"], 1);
    assert_eq!(
        next_json(&mut ws, SHORT).await.unwrap()["topicName"],
        "v2.system.socket_closing"
    );

    // Scripting, token expiry and topic bans over HTTP.
    let status = client
        .post(format!("{base}/testkit/script"))
        .json(&json!({"endpoint": "token", "responses": [{"status": 429, "retry_after": 3, "body": "{}"}]}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    let (status, _, headers) = token_with(&client, &base, "test-client", "test-secret").await;
    assert_eq!(status, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "3");
    let tok = token(&client, &base).await;
    client
        .post(format!("{base}/testkit/forbid-topic"))
        .json(&json!({"topic": "v2.banned"}))
        .send()
        .await
        .unwrap();
    let (cid, _) = channel(&client, &base, &tok).await;
    assert_eq!(
        subscribe(&client, &base, &tok, &cid, &["v2.banned"], true)
            .await
            .0,
        403
    );
    client
        .post(format!("{base}/testkit/expire-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(create_channel(&client, &base, &tok).await.0, 401);

    let stats: Value = client
        .get(format!("{base}/testkit/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["notifications_published"], 1);
    assert_eq!(stats["tokens_issued"], 2);
    assert_eq!(stats["requests_with_expired_token"], 1);
    assert_eq!(stats["last_http_retry_after_served"], 3);
    assert!(stats["requests"].as_array().unwrap().len() >= 3);
    assert!(stats["requests"][0]["at_ms"].is_u64());
    // Control requests are not in the request log.
    assert!(gw
        .stats()
        .requests
        .iter()
        .all(|r| !r.path.starts_with("/testkit/")));
}

#[test]
fn works_without_any_async_runtime_and_shuts_down() {
    let gw = gateway(|_| {});
    let addr = gw.addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = "grant_type=client_credentials";
    // base64("test-client:test-secret")
    write!(
        s,
        "POST /oauth/token HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic dGVzdC1jbGllbnQ6dGVzdC1zZWNyZXQ=\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"token_type\":\"bearer\""));
    assert_eq!(gw.stats().tokens_issued, 1);

    gw.shutdown();
    gw.shutdown(); // idempotent
    assert!(std::net::TcpStream::connect(addr).is_err());
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_mode_with_trusted_ca_and_refusal_without_it() {
    let gw = gateway(|c| c.tls = true);
    assert!(gw.base_url().starts_with("https://"));
    let ca = gw.ca_cert_der().expect("CA in TLS mode").to_vec();
    assert!(gw
        .ca_cert_pem()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&ca).unwrap()])
        .build()
        .unwrap();
    let base = gw.base_url();
    let tok = token(&client, &base).await;
    let (_id, uri) = channel(&client, &base, &tok).await;
    assert!(uri.starts_with("wss://127.0.0.1:"), "{uri}");

    let connector = tokio_tungstenite::Connector::Rustls(tls_client_config(Some(&ca)));
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        uri.as_str(),
        None,
        false,
        Some(connector),
    )
    .await
    .expect("TLS WebSocket with the CA trusted");
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));

    // Also by name: the certificate covers localhost.
    let by_name = uri.replace("127.0.0.1", "localhost");
    let connector = tokio_tungstenite::Connector::Rustls(tls_client_config(Some(&ca)));
    let (mut ws2, _) = tokio_tungstenite::connect_async_tls_with_config(
        by_name.as_str(),
        None,
        false,
        Some(connector),
    )
    .await
    .expect("TLS by name");
    ping(&mut ws2).await;
    assert!(is_pong(&next_json(&mut ws2, SHORT).await.unwrap()));

    // Without the CA the handshake is refused.
    let connector = tokio_tungstenite::Connector::Rustls(tls_client_config(None));
    let refused = tokio_tungstenite::connect_async_tls_with_config(
        uri.as_str(),
        None,
        false,
        Some(connector),
    )
    .await;
    let err = format!(
        "{:?}",
        refused
            .map(|_| ())
            .expect_err("untrusted certificate refused")
    );
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(http()
        .get(format!("{base}/testkit/stats"))
        .send()
        .await
        .is_err());
    assert_eq!(gw.stats().sockets_opened, 2);
}

// ---------------------------------------------------------------------------------------------
// Proxy

#[tokio::test]
async fn rest_through_the_proxy_yields_a_connect_uri_through_the_proxy() {
    let gw = gateway(|_| {});
    let proxy = Proxy::start(gw.addr()).unwrap();
    let client = http();
    let via = format!("http://{}", proxy.addr());
    let tok = token(&client, &via).await;
    let (_id, uri) = channel(&client, &via, &tok).await;
    assert!(
        uri.starts_with(&format!("ws://{}/channels/", proxy.addr())),
        "{uri}"
    );
    let mut ws = connect(&uri).await;
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
    assert!(proxy.connections_accepted() >= 2);
    assert!(proxy.stats().bytes_up > 0 && proxy.stats().bytes_down > 0);

    gw.set_connect_base(Some("ws://example.invalid:1".into()));
    let (_id, uri) = channel(&client, &gw.base_url(), &tok).await;
    assert!(uri.starts_with("ws://example.invalid:1/channels/"));
}

async fn via_proxy(gw: &Gateway, proxy: &Proxy) -> Ws {
    let client = http();
    let tok = token(&client, &gw.base_url()).await;
    let (id, _) = channel(&client, &gw.base_url(), &tok).await;
    connect(&format!("ws://{}/channels/{id}", proxy.addr())).await
}

#[tokio::test]
async fn proxy_blackhole_holds_bytes_and_pass_releases_them() {
    let gw = gateway(|_| {});
    let proxy = Proxy::start(gw.addr()).unwrap();
    let mut ws = via_proxy(&gw, &proxy).await;
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));

    proxy.set_mode(ProxyMode::Blackhole);
    assert_eq!(proxy.mode(), ProxyMode::Blackhole);
    ping(&mut ws).await;
    assert!(next_msg(&mut ws, Duration::from_millis(400))
        .await
        .is_none());
    assert_eq!(gw.stats().pings_received, 1);
    assert_eq!(proxy.stats().connections_open_now, 1);
    assert_eq!(gw.stats().sockets_open_now, 1);

    proxy.set_mode(ProxyMode::Pass);
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
    assert_eq!(gw.stats().pings_received, 2);
}

#[tokio::test]
async fn proxy_reset_kills_connections_and_refuses_new_ones_until_pass() {
    let gw = gateway(|_| {});
    let proxy = Proxy::start(gw.addr()).unwrap();
    let mut ws = via_proxy(&gw, &proxy).await;
    proxy.set_mode(ProxyMode::Reset);
    let outcome = tokio::time::timeout(SHORT, ws.next())
        .await
        .expect("socket ends");
    assert!(
        !matches!(outcome, Some(Ok(_))),
        "expected an abrupt end, got {outcome:?}"
    );
    wait_stats(&gw, |s| s.sockets_open_now == 0).await;
    assert!(gw.stats().close_codes.is_empty());
    assert_eq!(proxy.stats().connections_reset, 1);

    let client = http();
    let tok = token(&client, &gw.base_url()).await;
    let (id, _) = channel(&client, &gw.base_url(), &tok).await;
    let url = format!("ws://{}/channels/{id}", proxy.addr());
    assert!(tokio_tungstenite::connect_async(url.as_str())
        .await
        .is_err());
    assert_eq!(proxy.stats().connections_reset, 2);

    proxy.set_mode(ProxyMode::Pass);
    let mut ws = connect(&url).await;
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
    assert_eq!(proxy.connections_accepted(), 3);
}

#[tokio::test]
async fn proxy_delay_adds_latency_both_ways() {
    let gw = gateway(|_| {});
    let proxy = Proxy::start(gw.addr()).unwrap();
    let mut ws = via_proxy(&gw, &proxy).await;
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(150)));
    let t0 = Instant::now();
    ping(&mut ws).await;
    assert!(is_pong(&next_json(&mut ws, SHORT).await.unwrap()));
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
}
