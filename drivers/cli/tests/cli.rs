//! End-to-end tests of the `genesys-keepalive` binary: it is spawned as a process against a testkit gateway
//! started in this test process, over real loopback sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use genesys_keepalive_testkit::{Fault, Gateway, GatewayConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_genesys-keepalive");
const CLIENT_ID: &str = "cli-test-client";
/// Recognisable, so that any leak into the output is caught.
const SECRET: &str = "Zq9-cli-SECRET-4e1f7a";
const TOPIC: &str = "v2.users.cli-test.presence";

// The compressed timings of the end-to-end runs.
const HEARTBEAT_MS: u64 = 500;
const IDLE_MS: u64 = 3000;
/// An ack later than this counts as lost; two in a row declare the peer dead.
const ACK_MS: &str = "1500";

/// The long, timing-sensitive runs (the two minute-long acceptance runs, the demo, the bench) take this
/// lock so that they never compete with each other for the two cores a CI machine has: a scheduling
/// stall of a few seconds would otherwise look like a dead peer.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn gateway(token_lifetime: Duration) -> Gateway {
    Gateway::start(GatewayConfig {
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        token_lifetime,
        server_heartbeat: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        ..GatewayConfig::default()
    })
    .expect("gateway starts")
}

/// `run` against `base` with compressed timings.
fn run_args(base: &str) -> Vec<String> {
    let hb = HEARTBEAT_MS.to_string();
    let idle = IDLE_MS.to_string();
    [
        "run",
        "--api-base",
        base,
        "--login-base",
        base,
        "--allow-insecure",
        "--topic",
        TOPIC,
        "--heartbeat-interval-ms",
        &hb,
        "--idle-timeout-ms",
        &idle,
        "--ack-timeout-ms",
        ACK_MS,
        "--backoff-base-ms",
        "200",
        "--backoff-max-ms",
        "2000",
        "--min-uptime-ms",
        "3000",
        "--token-refresh-margin-ms",
        "2000",
        "--stats-interval-ms",
        "1000",
        "--seed",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `args` with each flag set to the value given (replaced if present, appended otherwise).
fn with_flags(mut args: Vec<String>, flags: &[(&str, &str)]) -> Vec<String> {
    for (flag, value) in flags {
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }
    args
}

type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A spawned `genesys-keepalive` with its stdout and stderr read line by line (each stamped on arrival).
struct Proc {
    child: Child,
    out: Lines,
    err: Lines,
    readers: Vec<JoinHandle<()>>,
}

fn reader(stream: impl Read + Send + 'static, lines: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push((Instant::now(), line));
        }
    })
}

impl Proc {
    fn spawn<S: AsRef<str>>(args: &[S], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args.iter().map(|a| a.as_ref()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in [
            "GENESYS_CLIENT_ID",
            "GENESYS_CLIENT_SECRET",
            "GENESYS_REGION",
            "GENESYS_API_BASE",
            "GENESYS_LOGIN_BASE",
            "RUST_LOG",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let out: Lines = Arc::default();
        let err: Lines = Arc::default();
        let readers = vec![
            reader(child.stdout.take().unwrap(), out.clone()),
            reader(child.stderr.take().unwrap(), err.clone()),
        ];
        Proc {
            child,
            out,
            err,
            readers,
        }
    }

    fn creds() -> [(&'static str, &'static str); 2] {
        [
            ("GENESYS_CLIENT_ID", CLIENT_ID),
            ("GENESYS_CLIENT_SECRET", SECRET),
        ]
    }

    /// The first stdout JSON line after `after` for which `pred` holds.
    fn wait_json(
        &self,
        after: Instant,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(Instant, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.out.lock().unwrap();
                for (at, line) in lines.iter() {
                    if *at < after {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(line) {
                        if pred(&v) {
                            return Some((*at, v));
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last stdout JSON line for which `pred` holds.
    fn last_json(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let lines = self.out.lock().unwrap();
        lines
            .iter()
            .rev()
            .filter_map(|(_, l)| serde_json::from_str::<Value>(l).ok())
            .find(|v| pred(v))
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the exit; kills the process and fails the test past `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the process did not exit within {timeout:?}; stderr: {:#?}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn stderr(&self) -> Vec<String> {
        self.err
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn error_lines(&self) -> Vec<String> {
        self.stderr()
            .into_iter()
            .filter(|l| l.starts_with("error:"))
            .collect()
    }

    /// No line of either stream holds the client secret, any other secret given, or a token.
    fn assert_no_credentials(&self, extra_secrets: &[&str]) {
        for line in self.stdout().iter().chain(self.stderr().iter()) {
            for s in std::iter::once(&SECRET).chain(extra_secrets) {
                assert!(!line.contains(s), "a secret leaked: {line}");
            }
            assert!(!line.contains("Bearer "), "a bearer token leaked: {line}");
            assert!(!line.contains("Basic "), "basic credentials leaked: {line}");
            assert!(
                !line.to_ascii_lowercase().contains("access_token"),
                "an access token leaked: {line}"
            );
        }
    }

    /// Every stdout line is a JSON object with a known `kind`.
    fn assert_json_lines(&self) {
        let lines = self.stdout();
        assert!(!lines.is_empty());
        for line in &lines {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            let kind = v["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("no kind: {line}"));
            assert!(
                ["state", "audit", "alert", "notification", "stats", "gap"].contains(&kind),
                "unknown kind {kind}: {line}"
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn is_kind(v: &Value, kind: &str) -> bool {
    v["kind"] == kind
}

fn is_state(v: &Value, state: &str) -> bool {
    is_kind(v, "state") && v["state"] == state
}

fn final_stats(p: &Proc) -> Value {
    p.last_json(|v| is_kind(v, "stats") && v["final"] == true)
        .unwrap_or_else(|| panic!("no final stats line; stdout: {:#?}", p.stdout()))
}

fn closed_gracefully(gw: &Gateway) -> bool {
    gw.stats()
        .close_codes
        .iter()
        .any(|(code, reason)| *code == 1000 && reason == "Graceful shutdown")
}

#[test]
fn run_prints_json_lines_delivers_notifications_and_shuts_down_on_sigterm() {
    let gw = gateway(Duration::from_secs(300));
    let base = gw.base_url();
    let env = Proc::creds();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("RUST_LOG", "debug")); // the most verbose logs must not leak credentials either
    let start = Instant::now();
    let mut p = Proc::spawn(&run_args(&base), &env);

    let (stable_at, _) = p
        .wait_json(start, Duration::from_secs(10), |v| {
            is_state(v, "STABLE") && v["from"] == "CONNECTING"
        })
        .unwrap_or_else(|| panic!("no STABLE line; stderr: {:#?}", p.stderr()));

    // ~10 s of steady running, publishing as we go.
    let mut seqs = Vec::new();
    while stable_at.elapsed() < Duration::from_secs(9) {
        std::thread::sleep(Duration::from_millis(900));
        seqs.push(gw.publish(TOPIC, serde_json::json!({"n": seqs.len()})));
    }
    for seq in &seqs {
        let got = p.wait_json(start, Duration::from_secs(5), |v| {
            is_kind(v, "notification") && v["eventBody"]["seq"] == *seq
        });
        let (_, n) = got.unwrap_or_else(|| panic!("notification {seq} not printed"));
        assert_eq!(n["topicName"], TOPIC);
        assert!(n["metadata"]["CorrelationId"].is_string());
        assert_eq!(n["version"], "2");
    }

    p.sigterm();
    let status = p.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {:#?}", p.stderr());

    p.assert_json_lines();
    let stats = final_stats(&p);
    assert_eq!(stats["state"], "STOPPED");
    assert_eq!(stats["reconnects"], 0, "{stats}");
    assert_eq!(stats["dead_peers"], 0, "{stats}");
    assert_eq!(stats["notifications_delivered"], seqs.len() as u64);
    assert!(stats["heartbeats_acked"].as_u64().unwrap() >= 15, "{stats}");
    // Periodic stats lines came too.
    assert!(
        p.stdout()
            .iter()
            .filter(|l| l.contains(r#""kind":"stats""#) && l.contains(r#""final":false"#))
            .count()
            >= 5
    );
    // An audit line carries the AuditEntry's own fields.
    let audit = p
        .last_json(|v| is_kind(v, "audit") && v["event"] == "CONNECTED")
        .expect("a CONNECTED audit line");
    for field in [
        "timestamp",
        "connectionId",
        "event",
        "payloadSize",
        "state",
        "error",
    ] {
        assert!(audit.get(field).is_some(), "{field} missing: {audit}");
    }
    assert!(
        closed_gracefully(&gw),
        "close codes seen by the gateway: {:?}",
        gw.stats().close_codes
    );
    assert_eq!(gw.stats().sockets_opened, 1);
    assert!(p.error_lines().is_empty(), "{:#?}", p.stderr());
    p.assert_no_credentials(&[]);
}

/// The acceptance run: 60 s with no reconnect, then a blackhole detected and recovered from within the idle
/// timeout plus one heartbeat interval.
#[test]
fn acceptance_sixty_seconds_stable_then_blackhole_recovered_within_idle_plus_interval() {
    acceptance("tokio");
}

/// The acceptance run with `--driver async-std`.
#[test]
fn acceptance_with_the_async_std_driver() {
    acceptance("async-std");
}

fn acceptance(driver: &str) {
    let _heavy = heavy();
    // Tokens live 20 s: several refreshes happen during the minute, none may cost a reconnect.
    let gw = gateway(Duration::from_secs(20));
    let base = gw.base_url();
    let start = Instant::now();
    let args = with_flags(run_args(&base), &[("--driver", driver)]);
    let mut p = Proc::spawn(&args, &Proc::creds());
    let (stable_at, _) = p
        .wait_json(start, Duration::from_secs(10), |v| is_state(v, "STABLE"))
        .unwrap_or_else(|| panic!("no STABLE line; stderr: {:#?}", p.stderr()));

    let mut published = Vec::new();
    while stable_at.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        published.push(gw.publish(TOPIC, serde_json::json!({"minute": true})));
    }
    // The periodic stats line after the minute.
    let minute = Instant::now();
    let (_, stats) = p
        .wait_json(minute, Duration::from_secs(3), |v| is_kind(v, "stats"))
        .expect("a periodic stats line");
    assert_eq!(stats["reconnects"], 0, "{stats}");
    assert_eq!(stats["dead_peers"], 0, "{stats}");
    assert_eq!(stats["connections_opened"], 1, "{stats}");
    assert_eq!(stats["state"], "STABLE", "{stats}");
    assert!(stats["token_refreshes"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(gw.stats().sockets_opened, 1);
    assert!(p
        .last_json(|v| is_kind(v, "state") && v["state"] != "STABLE")
        .is_none());
    assert!(
        p.last_json(|v| is_kind(v, "gap")).is_none(),
        "token refreshes are no gap"
    );
    for seq in &published {
        assert!(
            p.wait_json(start, Duration::from_secs(2), |v| {
                is_kind(v, "notification") && v["eventBody"]["seq"] == *seq
            })
            .is_some(),
            "notification {seq} missing"
        );
    }

    // Blackhole: the socket goes silent without closing.
    let injected = Instant::now();
    gw.set_fault(Fault::Blackhole);
    let (dead_at, alert) = p
        .wait_json(injected, Duration::from_secs(10), |v| {
            is_kind(v, "alert") && v["event"] == "DEAD_PEER"
        })
        .unwrap_or_else(|| panic!("no DEAD_PEER alert; stderr: {:#?}", p.stderr()));
    let (back_at, _) = p
        .wait_json(injected, Duration::from_secs(10), |v| {
            is_state(v, "STABLE") && v["from"] == "RECONNECTING"
        })
        .unwrap_or_else(|| panic!("not STABLE again; stderr: {:#?}", p.stderr()));
    let detection = dead_at - injected;
    let recovery = back_at - injected;
    let bound = Duration::from_millis(IDLE_MS + HEARTBEAT_MS);
    eprintln!(
        "acceptance ({driver}): 60 s with 0 reconnects; blackhole detected after {detection:?} ({}), STABLE again \
         after {recovery:?}; bound idle + interval = {bound:?}",
        alert["metrics"]["detail"]
    );
    assert!(
        recovery <= bound,
        "recovered after {recovery:?}, more than idle timeout + one heartbeat interval ({bound:?})"
    );

    // The outage is reported as one gap: from before the blackhole to the new socket.
    let (_, gap) = p
        .wait_json(injected, Duration::from_secs(3), |v| is_kind(v, "gap"))
        .unwrap_or_else(|| panic!("no gap line; stdout: {:#?}", p.stdout()));
    assert_eq!(gap["reason"], "dead_peer", "{gap}");
    assert_eq!(gap["topics"], serde_json::json!([TOPIC]), "{gap}");
    let gap_ms = gap["duration_ms"].as_u64().unwrap();
    let outage_ms = recovery.as_millis() as u64;
    assert!(
        gap_ms + 200 >= outage_ms && gap_ms <= outage_ms + HEARTBEAT_MS + 500,
        "gap of {gap_ms} ms for an outage of {outage_ms} ms: {gap}"
    );
    assert!(
        gap["from"].as_str().unwrap() < gap["to"].as_str().unwrap(),
        "{gap}"
    );

    // Notifications flow on the new socket.
    let seq = gw.publish(TOPIC, serde_json::json!({"after": "blackhole"}));
    assert!(p
        .wait_json(back_at, Duration::from_secs(3), |v| {
            is_kind(v, "notification") && v["eventBody"]["seq"] == seq
        })
        .is_some());

    p.sigterm();
    let status = p.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {:#?}", p.stderr());
    let stats = final_stats(&p);
    assert_eq!(stats["dead_peers"], 1, "{stats}");
    assert_eq!(stats["reconnects"], 1, "{stats}");
    assert_eq!(gw.stats().sockets_opened, 2);
    assert!(closed_gracefully(&gw));
    p.assert_json_lines();
    p.assert_no_credentials(&[]);
}

fn expect_failure(p: &mut Proc, code: i32) -> String {
    let status = p.wait(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(code),
        "stdout: {:#?}\nstderr: {:#?}",
        p.stdout(),
        p.stderr()
    );
    let errors = p.error_lines();
    assert_eq!(
        errors.len(),
        1,
        "exactly one error line expected: {:#?}",
        p.stderr()
    );
    errors[0].clone()
}

#[test]
fn unknown_region_exits_2_listing_the_known_regions() {
    let mut p = Proc::spawn(&["run", "--region", "mars-1"], &Proc::creds());
    let line = expect_failure(&mut p, 2);
    assert!(line.contains("mars-1"), "{line}");
    for known in ["us-east-1", "eu-west-1", "ap-southeast-2", "mypurecloud.ie"] {
        assert!(line.contains(known), "{known} not listed: {line}");
    }
    p.assert_no_credentials(&[]);
}

#[test]
fn unknown_region_from_the_environment_exits_2() {
    let mut env = Proc::creds().to_vec();
    env.push(("GENESYS_REGION", "nowhere-9"));
    let mut p = Proc::spawn(&["run"], &env);
    let line = expect_failure(&mut p, 2);
    assert!(
        line.contains("nowhere-9") && line.contains("us-east-1"),
        "{line}"
    );
}

#[test]
fn missing_credentials_exit_2() {
    let mut p = Proc::spawn(&["run", "--region", "eu-west-1"], &[]);
    let line = expect_failure(&mut p, 2);
    assert!(
        line.contains("GENESYS_CLIENT_ID") && line.contains("GENESYS_CLIENT_SECRET"),
        "{line}"
    );
    let mut p = Proc::spawn(
        &["run", "--region", "eu-west-1"],
        &[("GENESYS_CLIENT_ID", CLIENT_ID)],
    );
    let line = expect_failure(&mut p, 2);
    assert!(line.contains("GENESYS_CLIENT_SECRET"), "{line}");
}

#[test]
fn bad_credentials_exit_3() {
    let gw = gateway(Duration::from_secs(300));
    let base = gw.base_url();
    let wrong = "Wrong-secret-55d1c";
    let mut p = Proc::spawn(
        &run_args(&base),
        &[
            ("GENESYS_CLIENT_ID", CLIENT_ID),
            ("GENESYS_CLIENT_SECRET", wrong),
        ],
    );
    let line = expect_failure(&mut p, 3);
    assert!(line.contains("GENESYS_CLIENT_SECRET"), "{line}");
    assert!(line.contains("401"), "{line}");
    p.assert_no_credentials(&[wrong]);
}

#[test]
fn forbidden_topic_exits_3_naming_the_topic() {
    let gw = gateway(Duration::from_secs(300));
    let forbidden = "v2.routing.queues.secret-queue.conversations";
    gw.forbid_topic(forbidden);
    let mut args = run_args(&gw.base_url());
    args.extend(["--topic".to_string(), forbidden.to_string()]);
    let mut p = Proc::spawn(&args, &Proc::creds());
    let line = expect_failure(&mut p, 3);
    assert!(line.contains(forbidden), "{line}");
    assert!(line.contains("403"), "{line}");
    p.assert_no_credentials(&[]);
}

#[test]
fn gateway_not_running_exits_4_after_the_last_attempt() {
    // A port that was just free: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let args = with_flags(
        run_args(&base),
        &[
            ("--max-reconnect-attempts", "2"),
            ("--backoff-base-ms", "50"),
            ("--backoff-max-ms", "100"),
        ],
    );
    let mut p = Proc::spawn(&args, &Proc::creds());
    let line = expect_failure(&mut p, 4);
    assert!(line.contains("2 reconnect attempts"), "{line}");
    assert!(line.to_ascii_lowercase().contains("refused"), "{line}");
    p.assert_no_credentials(&[]);
}

/// `--driver async-std` ends with the same exit codes and error lines as tokio: 3 for refused credentials,
/// 4 after the last attempt against a gateway that is not running.
#[test]
fn async_std_driver_gives_the_same_exit_codes() {
    let gw = gateway(Duration::from_secs(300));
    let wrong = "Wrong-secret-55d1c";
    let mut p = Proc::spawn(
        &with_flags(run_args(&gw.base_url()), &[("--driver", "async-std")]),
        &[
            ("GENESYS_CLIENT_ID", CLIENT_ID),
            ("GENESYS_CLIENT_SECRET", wrong),
        ],
    );
    let line = expect_failure(&mut p, 3);
    assert!(line.contains("GENESYS_CLIENT_SECRET"), "{line}");
    assert!(line.contains("401"), "{line}");
    p.assert_no_credentials(&[wrong]);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = with_flags(
        run_args(&format!("http://127.0.0.1:{port}")),
        &[
            ("--driver", "async-std"),
            ("--max-reconnect-attempts", "2"),
            ("--backoff-base-ms", "50"),
            ("--backoff-max-ms", "100"),
        ],
    );
    let mut p = Proc::spawn(&args, &Proc::creds());
    let line = expect_failure(&mut p, 4);
    assert!(line.contains("2 reconnect attempts"), "{line}");
    assert!(line.to_ascii_lowercase().contains("refused"), "{line}");
    p.assert_no_credentials(&[]);
}

#[test]
fn config_file_with_an_unknown_field_exits_2() {
    let dir = std::env::temp_dir().join(format!("gk-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "idle_timeout_ms = 9000\nheartbeat_everything = true\n",
    )
    .unwrap();
    let mut p = Proc::spawn(&["run", "--config", path.to_str().unwrap()], &Proc::creds());
    let line = expect_failure(&mut p, 2);
    assert!(line.contains("heartbeat_everything"), "{line}");

    // A coherent file works together with the flags (the flags win).
    let gw = gateway(Duration::from_secs(300));
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "api_base = \"{b}\"\nlogin_base = \"{b}\"\nallow_insecure = true\ntopics = [\"{TOPIC}\"]\n\
             idle_timeout_ms = 2000\nack_timeout_ms = 1000\nmin_interval_ms = 100\n\
             [interval_matrix]\nstable_ms = 1500\ndegraded_ms = 750\nreconnecting_ms = 375\n",
            b = gw.base_url()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut p = Proc::spawn(
        &[
            "run",
            "--config",
            good.to_str().unwrap(),
            "--heartbeat-interval-ms",
            "400",
        ],
        &Proc::creds(),
    );
    assert!(p
        .wait_json(start, Duration::from_secs(10), |v| is_state(v, "STABLE"))
        .is_some());
    std::thread::sleep(Duration::from_millis(1300));
    p.sigterm();
    assert_eq!(p.wait(Duration::from_secs(10)).code(), Some(0));
    // 400 ms heartbeats, not the file's 1500 ms: at least 3 in 1.3 s.
    assert!(final_stats(&p)["heartbeats_sent"].as_u64().unwrap() >= 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keepalive_frame_profile_against_the_gateway() {
    let gw = gateway(Duration::from_secs(300));
    let start = Instant::now();
    let mut p = Proc::spawn(
        &[
            "run",
            "--profile",
            "keepalive-frame",
            "--url",
            &gw.ws_url("/keepalive"),
            "--login-base",
            &gw.base_url(),
            "--allow-insecure",
            "--heartbeat-interval-ms",
            "400",
            "--idle-timeout-ms",
            "2000",
            "--ack-timeout-ms",
            "1000",
        ],
        &Proc::creds(),
    );
    assert!(p
        .wait_json(start, Duration::from_secs(10), |v| is_state(v, "STABLE"))
        .is_some());
    std::thread::sleep(Duration::from_millis(1500));
    p.sigterm();
    assert_eq!(p.wait(Duration::from_secs(10)).code(), Some(0));
    let stats = final_stats(&p);
    assert!(stats["heartbeats_acked"].as_u64().unwrap() >= 3, "{stats}");
    let g = gw.stats();
    assert!(g.keepalives_received >= 3);
    assert_eq!(g.keepalives_invalid, 0);
    // With credentials the token was fetched and sent in the handshake (and never printed).
    assert!(g.tokens_issued >= 1);
    assert_eq!(g.requests_with_expired_token, 0);
    p.assert_no_credentials(&[]);
}

fn http(base_addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(base_addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {base_addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn gateway_command_prints_its_url_serves_the_control_api_and_stops_on_sigterm() {
    let start = Instant::now();
    let mut g = Proc::spawn(
        &["gateway", "--port", "0", "--server-heartbeat-ms", "1000"],
        &Proc::creds(),
    );
    let (_, first) = g
        .wait_json(start, Duration::from_secs(10), |v| is_kind(v, "gateway"))
        .expect("the gateway's first line");
    let line0: Value = serde_json::from_str(&g.stdout()[0]).unwrap();
    assert_eq!(line0["kind"], "gateway", "the URL comes first");
    let base = first["base_url"].as_str().unwrap().to_string();
    assert!(first["keepalive_url"]
        .as_str()
        .unwrap()
        .ends_with("/keepalive"));
    let addr = base.trim_start_matches("http://").to_string();

    // A client against it (credentials from the same environment).
    let mut p = Proc::spawn(&run_args(&base), &Proc::creds());
    assert!(p
        .wait_json(start, Duration::from_secs(10), |v| is_state(v, "STABLE"))
        .is_some());
    let (status, v) = http(
        &addr,
        "POST",
        "/testkit/publish",
        &format!(r#"{{"topic":"{TOPIC}","body":{{"via":"http"}}}}"#),
    );
    assert_eq!(status, 200);
    let seq = v["seq"].as_u64().unwrap();
    assert!(p
        .wait_json(start, Duration::from_secs(5), |v| {
            is_kind(v, "notification") && v["eventBody"]["seq"] == seq
        })
        .is_some());
    let (status, stats) = http(&addr, "GET", "/testkit/stats", "");
    assert_eq!(status, 200);
    assert_eq!(stats["sockets_open_now"], 1);

    // A fault through the control API: a reset makes the client reconnect.
    let (status, _) = http(&addr, "POST", "/testkit/fault", r#"{"kind":"reset"}"#);
    assert_eq!(status, 200);
    assert!(p
        .wait_json(start, Duration::from_secs(10), |v| {
            is_state(v, "STABLE") && v["from"] == "RECONNECTING"
        })
        .is_some());

    p.sigterm();
    assert_eq!(p.wait(Duration::from_secs(10)).code(), Some(0));
    g.sigterm();
    assert_eq!(g.wait(Duration::from_secs(10)).code(), Some(0));
    let last = g.last_json(|v| is_kind(v, "gateway_stats")).unwrap();
    assert_eq!(last["sockets_opened"], 2);
    assert!(last["close_codes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c[0] == 1000));
    g.assert_no_credentials(&[]);
    p.assert_no_credentials(&[]);
}

#[test]
fn demo_loses_and_duplicates_nothing() {
    let _heavy = heavy();
    let mut p = Proc::spawn(&["demo", "--seconds", "12", "--seed", "5"], &[]);
    let status = p.wait(Duration::from_secs(60));
    let out = p.stdout();
    let row = |name: &str| -> String {
        out.iter()
            .find_map(|l| {
                let t = l.trim_start();
                t.strip_prefix(name)
                    .filter(|rest| rest.starts_with("  "))
                    .map(|rest| rest.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no `{name}` row: {out:#?}"))
    };
    assert_eq!(row("lost"), "0", "{out:#?}");
    assert_eq!(row("duplicated"), "0", "{out:#?}");
    assert!(row("notifications published").parse::<u64>().unwrap() >= 90);
    assert_eq!(row("dead peers"), "1", "{out:#?}");
    assert_eq!(row("rollovers"), "1", "{out:#?}");
    assert!(
        out.iter().all(|l| !l.starts_with("[!!]")),
        "a fault did not have its effect: {out:#?}"
    );
    assert_eq!(status.code(), Some(0), "{out:#?}\n{:#?}", p.stderr());
    assert!(out.iter().any(|l| l.starts_with("result: PASS")));
}

#[test]
fn demo_refuses_a_run_too_short_for_its_faults() {
    let mut p = Proc::spawn(&["demo", "--seconds", "3"], &[]);
    let line = expect_failure(&mut p, 2);
    assert!(line.contains("12"), "{line}");
}

#[test]
fn help_documents_the_control_api_and_the_output() {
    let out = Command::new(BIN)
        .args(["gateway", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for endpoint in [
        "/testkit/fault",
        "/testkit/publish",
        "/testkit/socket-closing",
        "/testkit/stats",
    ] {
        assert!(help.contains(endpoint), "{endpoint} not documented");
    }
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "GENESYS_CLIENT_SECRET",
        "\"kind\":\"state\"",
        "--heartbeat-interval-ms",
        "--token-refresh-margin-ms",
    ] {
        assert!(help.contains(word), "{word} not in run --help");
    }
}

#[test]
fn bench_reports_one_json_line() {
    let _heavy = heavy();
    let mut p = Proc::spawn(
        &[
            "bench",
            "--connections",
            "20",
            "--seconds",
            "3",
            "--interval-ms",
            "200",
        ],
        &[],
    );
    let status = p.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{:#?}", p.stderr());
    let out = p.stdout();
    assert_eq!(out.len(), 1, "{out:#?}");
    let v: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(v["kind"], "bench");
    assert_eq!(v["N"], 20);
    assert_eq!(v["open"], 20);
    assert_eq!(v["connect_failures"], 0);
    let sent = v["sent"].as_u64().unwrap();
    let acks = v["acks"].as_u64().unwrap();
    assert!(acks >= 20 * 5, "{v}");
    assert!(acks <= sent);
    assert!(v["rss_per_conn_kb"].as_f64().is_some());
    assert!(v["cpu_s"].as_f64().unwrap() >= 0.0);
}
