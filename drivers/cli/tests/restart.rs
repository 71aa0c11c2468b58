//! `--state-dir`: a restarted process reports the restart as a gap. The binary runs against a testkit
//! gateway in this process that publishes all along; the first process is killed (SIGKILL) or stopped
//! (SIGTERM), the gateway goes on publishing, and a second process with the same DIR must print, per
//! connection, exactly one `restart` gap whose window holds every notification neither process delivered.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use genesys_keepalive::time::{format_epoch_ms, parse_iso8601};
use genesys_keepalive_testkit::Gateway;
use serde_json::{json, Value};
use support::*;

const ORGS: [&str; 2] = ["north", "south west"];
/// How far a publish time may lie outside a gap's window (the test's clock reading is taken just before
/// the gateway's publish call).
const SLACK: Duration = Duration::from_millis(100);

fn topic(org: &str) -> String {
    format!("v2.users.restart-{}.presence", org.replace(' ', "-"))
}

fn state_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gk-restart-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The fleet file: every organisation on its own topic, so that what is published is for one of them.
fn orgs_file(gw: &Gateway, test: &str) -> (PathBuf, Vec<(String, String)>) {
    fleet_file(gw, test, &ORGS, |org| {
        format!("topics = [\"{}\"]\n", topic(org))
    })
}

/// One notification the gateway published: for whom, its seq, and the time just before the publish.
type Published = (String, u64, SystemTime);

/// Publishes a notification for every organisation every 40 ms until `stop`.
fn publish_until(gw: &Gateway, orgs: &[&str], stop: &AtomicBool, log: &Mutex<Vec<Published>>) {
    while !stop.load(Ordering::Relaxed) {
        for org in orgs {
            let at = SystemTime::now();
            let seq = gw.publish(&topic(org), json!({"org": org}));
            log.lock().unwrap().push((org.to_string(), seq, at));
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// The lines about `conn` (`None`: `run`'s, which name no connection).
fn about<'a>(lines: &'a [Value], kind: &'a str, conn: Option<&'a str>) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["kind"] == kind && conn.is_none_or(|c| v["connection"] == c))
        .collect()
}

fn delivered(lines: &[Value], conn: Option<&str>) -> BTreeSet<u64> {
    about(lines, "notification", conn)
        .iter()
        .filter_map(|v| v["eventBody"]["seq"].as_u64())
        .collect()
}

fn iso(t: SystemTime) -> String {
    format_epoch_ms(t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
}

fn time(v: &Value) -> SystemTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    parse_iso8601(s).unwrap_or_else(|| panic!("not ISO-8601: {s}"))
}

/// The one `restart` gap of `conn` in the second run, checked against what neither run delivered:
/// every such notification lies inside its window, and there was at least one. Returns its start.
fn check_restart_gap(
    org: &str,
    conn: Option<&str>,
    first: &[Value],
    second: &[Value],
    published: &[Published],
) -> SystemTime {
    assert!(
        about(first, "gap", conn).is_empty(),
        "{org}: the first start, with an empty DIR, prints no gap: {:?}",
        about(first, "gap", conn)
    );
    let restarts: Vec<&Value> = about(second, "gap", conn)
        .into_iter()
        .filter(|g| g["reason"] == "restart")
        .collect();
    assert_eq!(restarts.len(), 1, "{org}: {restarts:?}");
    let (from, to) = (time(&restarts[0]["from"]), time(&restarts[0]["to"]));
    assert!(from <= to, "{org}: {:?}", restarts[0]);
    let seen: BTreeSet<u64> = delivered(first, conn)
        .union(&delivered(second, conn))
        .copied()
        .collect();
    // What was published before the first process subscribed was never owed (a fresh start): from its
    // first delivery on, everything is.
    let owed_from = *delivered(first, conn)
        .first()
        .expect("the first run delivered");
    let lost: Vec<&Published> = published
        .iter()
        .filter(|(o, seq, _)| o == org && *seq > owed_from && !seen.contains(seq))
        .collect();
    assert!(
        !lost.is_empty(),
        "{org}: nothing was published while it was down: the test checked nothing"
    );
    for (_, seq, at) in &lost {
        assert!(
            from <= *at + SLACK && *at <= to + SLACK,
            "{org}: notification {seq}, published at {}, was never delivered and lies outside the \
             restart gap {}..{}",
            iso(*at),
            iso(from),
            iso(to),
        );
    }
    from
}

fn wait_checkpoints(dir: &Path, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = |n: &str| dir.join(format!("{}.json", n.replace(' ', "%20")));
    while !names.iter().all(|n| {
        std::fs::read_to_string(file(n)).is_ok_and(|t| t.contains("\"receiving_since\":\"20"))
    }) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Term,
}

/// A fleet of two organisations with `--state-dir`, stopped by `how` while the gateway publishes, and
/// started again with the same DIR.
fn fleet_restart(driver: &str, how: Stop) {
    let test = format!("fleet-{driver}-{}", how as u8);
    let gw = gateway();
    let (path, env) = orgs_file(&gw, &test);
    let dir = state_dir(&test);
    let flags = ["--state-dir", dir.to_str().unwrap()];
    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| publish_until(&gw, &ORGS, &stop, &log));
        let mut first = Proc::fleet_with(&path, driver, &flags, &env);
        first.wait_for("both STABLE, delivering", Duration::from_secs(20), |l| {
            ORGS.iter()
                .all(|o| stable(l, o) && delivered(l, Some(o)).len() >= 5)
        });
        wait_checkpoints(&dir, &ORGS);
        std::thread::sleep(Duration::from_millis(300));
        let stopped_at = SystemTime::now();
        match how {
            Stop::Kill => first.child.kill().expect("SIGKILL"),
            Stop::Term => first.sigterm(),
        }
        let status = first.wait(Duration::from_secs(10));
        if how == Stop::Term {
            assert!(status.success(), "{status:?}; {:?}", first.stderr());
        }
        // Down for about 2 s while the gateway goes on publishing.
        std::thread::sleep(Duration::from_secs(2));
        let mut second = Proc::fleet_with(&path, driver, &flags, &env);
        second.wait_for(
            "both back, each with its restart gap, delivering again",
            Duration::from_secs(20),
            |l| {
                ORGS.iter().all(|o| {
                    about(l, "gap", Some(o))
                        .iter()
                        .any(|g| g["reason"] == "restart")
                        && delivered(l, Some(o)).len() >= 5
                })
            },
        );
        stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        second.sigterm();
        assert!(second.wait(Duration::from_secs(10)).success());
        second.assert_no_secrets(&ORGS.map(secret));
        second.assert_tagged_lines();
        let (a, b) = (first.json(), second.json());
        let published = log.lock().unwrap().clone();
        for org in ORGS {
            let from = check_restart_gap(org, Some(org), &a, &b, &published);
            match how {
                // The checkpoint was on disk before the kill.
                Stop::Kill => assert!(
                    from <= stopped_at,
                    "{org}: the window starts after the kill"
                ),
                // A clean stop: the window starts at the stop (less a round trip), which came just after
                // the SIGTERM was sent, not at an older checkpoint.
                Stop::Term => assert!(
                    stopped_at - Duration::from_millis(300) <= from
                        && from <= stopped_at + Duration::from_secs(1),
                    "{org}: the restart gap starts at {} for a SIGTERM sent at {}",
                    iso(from),
                    iso(stopped_at)
                ),
            }
        }
        let text = std::fs::read_to_string(dir.join("south%20west.json")).unwrap();
        assert!(!text.contains(&secret("south west")), "{text}");
    });
}

#[test]
fn fleet_tokio_a_killed_process_reports_the_restart() {
    fleet_restart("tokio", Stop::Kill);
}

#[test]
fn fleet_async_std_a_killed_process_reports_the_restart() {
    fleet_restart("async-std", Stop::Kill);
}

#[test]
fn fleet_tokio_a_stopped_process_reports_the_restart_from_the_stop() {
    fleet_restart("tokio", Stop::Term);
}

#[test]
fn fleet_async_std_a_stopped_process_reports_the_restart_from_the_stop() {
    fleet_restart("async-std", Stop::Term);
}

/// `run` with its configuration file (the fleet defaults' fields) and `--state-dir`.
fn run_proc(gw: &Gateway, test: &str, driver: &str, dir: &Path) -> Proc {
    let text = defaults(gw)
        .replace("[defaults]\n", "")
        .replace("[defaults.interval_matrix]", "[interval_matrix]")
        .replace(TOPIC, &topic("run"));
    let path = write_file(test, &text);
    let args = [
        "run",
        "--config",
        path.to_str().unwrap(),
        "--driver",
        driver,
        "--stats-interval-ms",
        "1000",
        "--state-dir",
        dir.to_str().unwrap(),
    ];
    let env = [
        ("GENESYS_CLIENT_ID".to_string(), "client-run".to_string()),
        ("GENESYS_CLIENT_SECRET".to_string(), secret("run")),
    ];
    Proc::spawn(&args, &env)
}

fn run_restart(driver: &str) {
    let test = format!("run-{driver}");
    let gw = gateway();
    gw.add_client("client-run", &secret("run"));
    let dir = state_dir(&test);
    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| publish_until(&gw, &["run"], &stop, &log));
        let mut first = run_proc(&gw, &test, driver, &dir);
        first.wait_for("delivering", Duration::from_secs(20), |l| {
            delivered(l, None).len() >= 5
        });
        wait_checkpoints(&dir, &["default"]);
        std::thread::sleep(Duration::from_millis(300));
        first.child.kill().expect("SIGKILL");
        first.wait(Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(2));
        let mut second = run_proc(&gw, &test, driver, &dir);
        second.wait_for("the restart gap", Duration::from_secs(20), |l| {
            about(l, "gap", None)
                .iter()
                .any(|g| g["reason"] == "restart")
                && delivered(l, None).len() >= 5
        });
        stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        second.sigterm();
        assert!(second.wait(Duration::from_secs(10)).success());
        let published = log.lock().unwrap().clone();
        check_restart_gap("run", None, &first.json(), &second.json(), &published);
    });
}

#[test]
fn run_tokio_a_killed_process_reports_the_restart() {
    run_restart("tokio");
}

#[test]
fn run_async_std_a_killed_process_reports_the_restart() {
    run_restart("async-std");
}

#[test]
fn a_corrupt_checkpoint_is_refused_before_anything_connects() {
    let gw = gateway();
    let (path, env) = orgs_file(&gw, "corrupt");
    let dir = state_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("south%20west.json");
    std::fs::write(&bad, "{\"version\":1,\"receiving_since\":\"soon\"}").unwrap();
    let flags = ["--state-dir", dir.to_str().unwrap()];
    let mut p = Proc::fleet_with(&path, "tokio", &flags, &env);
    let status = p.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{:?}", p.stderr());
    let err = p.stderr().join("\n");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    let stats = gw.stats();
    assert_eq!((stats.token_requests, stats.sockets_opened), (0, 0));
    assert!(p.json().is_empty(), "{:?}", p.json());

    // A DIR that cannot be created: `run` refuses it the same way.
    let file = state_dir("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut p = run_proc(&gw, "not-a-dir", "tokio", &file.join("sub"));
    assert_eq!(p.wait(Duration::from_secs(10)).code(), Some(2));
    assert!(
        p.stderr().join("\n").contains("--state-dir"),
        "{:?}",
        p.stderr()
    );
    assert_eq!(gw.stats().token_requests, 0);
}
