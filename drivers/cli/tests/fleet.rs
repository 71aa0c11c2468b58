//! End-to-end tests of `genesys-keepalive fleet`: the binary runs as a process against a testkit gateway
//! started in this test process (one OAuth client per organisation), over real loopback sockets, with both
//! drivers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use genesys_keepalive_testkit::Gateway;
use serde_json::Value;
use support::*;

const FORBIDDEN: &str = "v2.users.fleet-test.forbidden";

/// Closes with 1000 "Graceful shutdown" the gateway saw from `client`.
fn graceful_closes(gw: &Gateway, client: &str) -> usize {
    gw.stats()
        .per_client
        .get(client)
        .map(|c| {
            c.close_codes
                .iter()
                .filter(|(code, reason)| *code == 1000 && reason == "Graceful shutdown")
                .count()
        })
        .unwrap_or(0)
}

/// Three organisations: `bad` presents a wrong secret, `forbidden` subscribes a topic the gateway refuses;
/// both print their stopped line (exit code 3, as `run` would exit) while `good` keeps running and
/// delivering. SIGTERM then closes `good` gracefully, prints its final stats line and exits 5.
fn three_orgs(driver: &str) {
    let gw = gateway();
    for org in ["good", "bad", "forbidden"] {
        gw.add_client(&format!("client-{org}"), &secret(org));
    }
    gw.forbid_topic(FORBIDDEN);
    let text = format!(
        "{}{}{}{}",
        defaults(&gw),
        connection("good", ""),
        connection("bad", ""),
        connection("forbidden", &format!("topics = [\"{FORBIDDEN}\"]\n")),
    );
    let path = write_file(&format!("three-{driver}"), &text);
    let mut env = creds("good", &secret("good"));
    env.extend(creds("bad", "not-the-secret"));
    env.extend(creds("forbidden", &secret("forbidden")));
    let mut p = Proc::fleet(&path, driver, None, &env);

    let stopped = |lines: &[Value], conn: &str| of(lines, "stopped", conn).next().cloned();
    p.wait_for(
        "two stopped lines and good STABLE",
        Duration::from_secs(20),
        |l| stopped(l, "bad").is_some() && stopped(l, "forbidden").is_some() && stable(l, "good"),
    );
    let lines = p.json();
    for conn in ["bad", "forbidden"] {
        let v = stopped(&lines, conn).unwrap();
        assert_eq!(v["exit_code"], 3, "{v}");
        assert!(v["reason"].is_string(), "{v}");
    }
    assert!(
        stopped(&lines, "bad").unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{lines:?}"
    );
    assert!(
        stopped(&lines, "forbidden").unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("forbidden"),
        "{lines:?}"
    );

    // The third keeps running and delivering.
    let mut published = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while published.len() < 5 {
        assert!(Instant::now() < deadline, "publishing took too long");
        published.insert(gw.publish(TOPIC, serde_json::json!({"n": published.len()})));
        std::thread::sleep(Duration::from_millis(200));
    }
    p.wait_for(
        "every notification delivered to good",
        Duration::from_secs(10),
        |l| {
            let seqs: BTreeSet<u64> = of(l, "notification", "good")
                .filter_map(|v| v["eventBody"]["seq"].as_u64())
                .collect();
            published.is_subset(&seqs)
        },
    );
    let running_stats = |l: &[Value]| of(l, "stats", "good").any(|v| v["final"] == false);
    p.wait_for(
        "a periodic stats line for good",
        Duration::from_secs(5),
        running_stats,
    );

    p.sigterm();
    let status = p.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(5), "stderr: {:#?}", p.stderr());
    let lines = p.json();
    let finals: Vec<&Value> = lines
        .iter()
        .filter(|v| v["kind"] == "stats" && v["final"] == true)
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "one final stats line per live connection: {finals:?}"
    );
    assert_eq!(finals[0]["connection"], "good");
    assert_eq!(
        graceful_closes(&gw, "client-good"),
        1,
        "{:?}",
        gw.stats().per_client
    );
    for org in ["bad", "forbidden"] {
        let n = gw
            .stats()
            .per_client
            .get(&format!("client-{org}"))
            .map(|c| c.sockets_opened);
        assert!(n.unwrap_or(0) == 0, "{org} never had a socket: {n:?}");
    }
    p.assert_tagged_lines();
    p.assert_no_secrets(&[secret("good"), secret("bad"), secret("forbidden")]);
}

#[test]
fn three_orgs_one_bad_credentials_one_forbidden_topic_tokio() {
    three_orgs("tokio");
}

#[test]
fn three_orgs_one_bad_credentials_one_forbidden_topic_async_std() {
    three_orgs("async-std");
}

/// Every connection running at SIGTERM: exit 0, a final stats line each, a 1000 close from each client.
fn sigterm_all_running(driver: &str) {
    let gw = gateway();
    let orgs = ["north", "south"];
    let (path, env) = fleet_file(&gw, &format!("sigterm-{driver}"), &orgs, |_| String::new());
    let mut p = Proc::fleet(&path, driver, None, &env);
    p.wait_stable(&orgs);
    p.sigterm();
    assert_eq!(
        p.wait(Duration::from_secs(15)).code(),
        Some(0),
        "{:#?}",
        p.stderr()
    );
    let lines = p.json();
    for org in orgs {
        let finals = of(&lines, "stats", org)
            .filter(|v| v["final"] == true)
            .count();
        assert_eq!(finals, 1, "{org}: {lines:?}");
        assert_eq!(graceful_closes(&gw, &format!("client-{org}")), 1, "{org}");
    }
    p.assert_tagged_lines();
    p.assert_no_secrets(&orgs.map(secret));
}

#[test]
fn sigterm_closes_every_connection_gracefully_tokio() {
    sigterm_all_running("tokio");
}

#[test]
fn sigterm_closes_every_connection_gracefully_async_std() {
    sigterm_all_running("async-std");
}

/// A second SIGTERM while the close handshakes cannot complete (the gateway has gone silent): the fleet stops
/// waiting, prints a final stats line per connection and exits 0, at once. (It used to hang for ever: the
/// runtime's drop ended each connection's task, whose wake of the dropped merged stream deadlocked.)
fn second_sigterm(driver: &str) {
    let gw = gateway();
    let orgs = ["east", "west"];
    let (path, env) = fleet_file(&gw, &format!("second-sigterm-{driver}"), &orgs, |_| {
        String::new()
    });
    let mut p = Proc::fleet(&path, driver, None, &env);
    p.wait_stable(&orgs);
    gw.set_fault(genesys_keepalive_testkit::Fault::Blackhole);
    p.sigterm();
    p.wait_for_stderr(
        "closing every connection gracefully",
        Duration::from_secs(10),
    );
    p.sigterm();
    assert_eq!(
        p.wait(Duration::from_secs(15)).code(),
        Some(0),
        "{:#?}",
        p.stderr()
    );
    assert!(
        p.stderr().iter().any(|l| l.contains("again: not waiting")),
        "the second SIGTERM came before the closes completed: {:#?}",
        p.stderr()
    );
    let lines = p.json();
    for org in orgs {
        let finals = of(&lines, "stats", org)
            .filter(|v| v["final"] == true)
            .count();
        assert_eq!(finals, 1, "{org}: {lines:?}");
    }
    p.assert_tagged_lines();
    p.assert_no_secrets(&orgs.map(secret));
}

#[test]
fn a_second_sigterm_stops_waiting_for_the_closes_tokio() {
    second_sigterm("tokio");
}

#[test]
fn a_second_sigterm_stops_waiting_for_the_closes_async_std() {
    second_sigterm("async-std");
}

/// A bad fleet file is refused before anything connects: exit 2, one error line naming the connection and
/// the field.
#[test]
fn a_bad_fleet_file_exits_2_naming_the_connection_and_the_field() {
    let gw = gateway();
    gw.add_client("client-one", &secret("one"));
    let env = creds("one", &secret("one"));
    let good = format!(
        "{}{}{}",
        defaults(&gw),
        connection("one", ""),
        connection("two", "")
    );
    let mut env_two = env.clone();
    env_two.extend(creds("two", &secret("two")));
    let cases = [
        (
            "unknown-field",
            good.replace("name = \"two\"\n", "name = \"two\"\nheartbeat_ms = 5\n"),
            env_two.clone(),
            ["connection `two`", "heartbeat_ms"],
        ),
        (
            "duplicate-name",
            good.replace("name = \"two\"", "name = \"one\""),
            env_two.clone(),
            ["connection `one`", "`name`"],
        ),
        (
            "missing-variable",
            good.clone(),
            env.clone(),
            ["connection `two`", "TWO_ID"],
        ),
    ];
    for driver in ["tokio", "async-std"] {
        for (name, text, env, needles) in &cases {
            let path = write_file(&format!("bad-{name}-{driver}"), text);
            let mut p = Proc::fleet(&path, driver, None, env);
            assert_eq!(p.wait(Duration::from_secs(10)).code(), Some(2), "{name}");
            let errors: Vec<String> = p
                .stderr()
                .into_iter()
                .filter(|l| l.starts_with("error:"))
                .collect();
            assert_eq!(errors.len(), 1, "{name}: {:#?}", p.stderr());
            for n in needles {
                assert!(errors[0].contains(n), "{name}: `{n}` not in {}", errors[0]);
            }
            assert!(p.json().is_empty(), "{name}: nothing printed on stdout");
            p.assert_no_secrets(&[secret("one"), secret("two")]);
        }
    }
    let stats = gw.stats();
    assert_eq!(stats.token_requests, 0, "nothing connected");
    assert_eq!(stats.sockets_opened, 0, "nothing connected");
}

/// Two shards over one file: every connection runs in exactly one of them.
#[test]
fn two_shards_split_one_file() {
    let gw = gateway();
    let orgs: Vec<String> = (0..8).map(|i| format!("org-{i}")).collect();
    let (path, env) = fleet_file(&gw, "shards", &orgs, |_| String::new());
    let mut shards: Vec<Proc> = [("0/2", "tokio"), ("1/2", "async-std")]
        .iter()
        .map(|(s, driver)| Proc::fleet(&path, driver, Some(s), &env))
        .collect();
    // Each org's client has exactly one socket open, and from one process only.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let per = gw.stats().per_client;
        if orgs.iter().all(|o| {
            per.get(&format!("client-{o}"))
                .is_some_and(|c| c.sockets_open_now == 1)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every org connected: {per:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, p) in shards.iter().enumerate() {
        for org in &orgs {
            if p.json().iter().any(|v| v["connection"] == org.as_str()) {
                assert!(
                    owner.insert(org.clone(), i).is_none(),
                    "{org} runs in both shards"
                );
            }
        }
    }
    assert_eq!(
        owner.len(),
        orgs.len(),
        "every connection runs in one shard: {owner:?}"
    );
    let used: BTreeSet<usize> = owner.values().copied().collect();
    assert_eq!(
        used.len(),
        2,
        "both shards took some of the eight: {owner:?}"
    );
    for p in &mut shards {
        p.sigterm();
        assert_eq!(
            p.wait(Duration::from_secs(15)).code(),
            Some(0),
            "{:#?}",
            p.stderr()
        );
        p.assert_tagged_lines();
    }
    for org in &orgs {
        assert_eq!(graceful_closes(&gw, &format!("client-{org}")), 1, "{org}");
        assert_eq!(
            gw.stats().per_client[&format!("client-{org}")].sockets_opened,
            1,
            "{org}"
        );
    }
}

/// When every connection stops on its own, the fleet exits with the first one's code (3 for refused
/// credentials, 4 for reconnect attempts exhausted), after a stopped line each.
#[test]
fn every_connection_stopping_exits_with_the_first_ones_code() {
    let gw = gateway();
    gw.add_client("client-refused", &secret("refused"));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_base = format!("http://{}", dead.local_addr().unwrap());
    drop(dead); // nobody listens there now
    let text = format!(
        "{}{}{}",
        defaults(&gw),
        connection("refused", ""),
        connection(
            "unreachable",
            &format!(
                "api_base = \"{dead_base}\"\nlogin_base = \"{dead_base}\"\nmax_reconnect_attempts = 1\n"
            )
        ),
    );
    for driver in ["tokio", "async-std"] {
        let path = write_file(&format!("all-stop-{driver}"), &text);
        let mut env = creds("refused", "wrong-secret");
        env.extend(creds("unreachable", &secret("unreachable")));
        let mut p = Proc::fleet(&path, driver, None, &env);
        let status = p.wait(Duration::from_secs(30));
        let lines = p.json();
        let stopped: Vec<&Value> = lines.iter().filter(|v| v["kind"] == "stopped").collect();
        assert_eq!(stopped.len(), 2, "{lines:?}");
        let code = |conn: &str| {
            stopped
                .iter()
                .find(|v| v["connection"] == conn)
                .map(|v| v["exit_code"].as_i64().unwrap())
        };
        assert_eq!((code("refused"), code("unreachable")), (Some(3), Some(4)));
        let first = stopped[0]["exit_code"].as_i64().unwrap() as i32;
        assert_eq!(status.code(), Some(first), "{driver}: {:#?}", p.stderr());
        let errors: Vec<String> = p
            .stderr()
            .into_iter()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{:#?}", p.stderr());
        let first_name = stopped[0]["connection"].as_str().unwrap();
        assert!(errors[0].contains(first_name), "{}", errors[0]);
        p.assert_tagged_lines();
        p.assert_no_secrets(&[secret("refused"), secret("unreachable")]);
    }
}

/// Every socket reset at once: each connection comes back on its own and prints its gap line (tagged with
/// its name, with its topics), and the fleet goes on.
fn reset_reports_a_gap_per_connection(driver: &str) {
    let gw = gateway();
    let orgs = ["east", "west"];
    let (path, env) = fleet_file(&gw, &format!("gap-{driver}"), &orgs, |_| String::new());
    let mut p = Proc::fleet(&path, driver, None, &env);
    p.wait_stable(&orgs);
    gw.set_fault(genesys_keepalive_testkit::Fault::Reset);
    p.wait_for("a gap line per connection", Duration::from_secs(20), |l| {
        orgs.iter().all(|o| of(l, "gap", o).next().is_some())
    });
    let lines = p.json();
    for org in orgs {
        let gap = of(&lines, "gap", org).next().unwrap();
        assert_eq!(gap["topics"], serde_json::json!([TOPIC]), "{gap}");
        assert!(
            gap["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{gap}"
        );
        assert!(gap["from"].as_str() <= gap["to"].as_str(), "{gap}");
    }
    gw.set_fault(genesys_keepalive_testkit::Fault::None);
    p.wait_for("both reconnected", Duration::from_secs(20), |_| {
        orgs.iter().all(|o| {
            gw.stats()
                .per_client
                .get(&format!("client-{o}"))
                .is_some_and(|c| c.sockets_open_now == 1 && c.sockets_opened >= 2)
        })
    });
    p.sigterm();
    assert_eq!(
        p.wait(Duration::from_secs(15)).code(),
        Some(0),
        "{:#?}",
        p.stderr()
    );
    p.assert_tagged_lines();
    p.assert_no_secrets(&orgs.map(secret));
}

#[test]
fn a_reset_prints_a_gap_line_per_connection_tokio() {
    reset_reports_a_gap_per_connection("tokio");
}

#[test]
fn a_reset_prints_a_gap_line_per_connection_async_std() {
    reset_reports_a_gap_per_connection("async-std");
}
