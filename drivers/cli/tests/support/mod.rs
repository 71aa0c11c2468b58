//! What the CLI's end-to-end tests share: the testkit gateway with compressed timings, fleet files, and
//! the binary run as a process whose stdout and stderr are read line by line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use genesys_keepalive_testkit::{Gateway, GatewayConfig};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_genesys-keepalive");
pub const TOPIC: &str = "v2.users.fleet-test.presence";

/// The secret of organisation `org`: recognisable, so that any leak into the output is caught.
pub fn secret(org: &str) -> String {
    format!("Zq9-fleet-SECRET-{org}-7c1e")
}

pub fn gateway() -> Gateway {
    Gateway::start(GatewayConfig {
        server_heartbeat: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        ..GatewayConfig::default()
    })
    .expect("gateway starts")
}

/// The `[defaults]` of every test's fleet file: the gateway and compressed timings.
pub fn defaults(gw: &Gateway) -> String {
    let base = gw.base_url();
    format!(
        "[defaults]\napi_base = \"{base}\"\nlogin_base = \"{base}\"\nallow_insecure = true\n\
         topics = [\"{TOPIC}\"]\nmin_interval_ms = 100\nidle_timeout_ms = 3000\nack_timeout_ms = 1500\n\
         backoff_base_ms = 200\nbackoff_max_ms = 2000\nmin_uptime_ms = 3000\n\
         token_refresh_margin_ms = 2000\n\
         [defaults.interval_matrix]\nstable_ms = 500\ndegraded_ms = 250\nreconnecting_ms = 125\n"
    )
}

/// A `[[connection]]` for `org`, whose credentials are in `<ORG>_ID` / `<ORG>_SECRET`.
pub fn connection(org: &str, extra: &str) -> String {
    let var = org.to_ascii_uppercase().replace('-', "_");
    format!(
        "[[connection]]\nname = \"{org}\"\nclient_id_env = \"{var}_ID\"\n\
         client_secret_env = \"{var}_SECRET\"\n{extra}"
    )
}

/// The environment for `org`: its id and `secret`.
pub fn creds(org: &str, secret: &str) -> Vec<(String, String)> {
    let var = org.to_ascii_uppercase().replace('-', "_");
    vec![
        (format!("{var}_ID"), format!("client-{org}")),
        (format!("{var}_SECRET"), secret.to_string()),
    ]
}

/// The fleet file `test` for `orgs`, each on its own OAuth client (registered with `gw`) with `extra(org)` in
/// its `[[connection]]`, and the environment holding their credentials.
pub fn fleet_file<S: AsRef<str>>(
    gw: &Gateway,
    test: &str,
    orgs: &[S],
    extra: impl Fn(&str) -> String,
) -> (PathBuf, Vec<(String, String)>) {
    let mut text = defaults(gw);
    let mut env = Vec::new();
    for org in orgs.iter().map(AsRef::as_ref) {
        gw.add_client(&format!("client-{org}"), &secret(org));
        text.push_str(&connection(org, &extra(org)));
        env.extend(creds(org, &secret(org)));
    }
    (write_file(test, &text), env)
}

pub fn write_file(test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gk-fleet-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub type Lines = Arc<Mutex<Vec<String>>>;

/// A spawned `genesys-keepalive fleet` with its stdout and stderr read line by line.
pub struct Proc {
    pub child: Child,
    pub out: Lines,
    pub err: Lines,
    readers: Vec<JoinHandle<()>>,
}

pub fn reader(stream: impl Read + Send + 'static, lines: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    })
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "debug"); // the most verbose logs must not leak credentials either
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

    pub fn fleet(path: &Path, driver: &str, shard: Option<&str>, env: &[(String, String)]) -> Proc {
        let shard: Vec<&str> = shard.map(|s| vec!["--shard", s]).unwrap_or_default();
        Proc::fleet_with(path, driver, &shard, env)
    }

    /// `fleet --config PATH --driver DRIVER` with stats every second, seed 7, and `extra` flags.
    pub fn fleet_with(path: &Path, driver: &str, extra: &[&str], env: &[(String, String)]) -> Proc {
        let path = path.to_str().unwrap();
        let mut args = vec!["fleet", "--config", path, "--driver", driver];
        args.extend(["--stats-interval-ms", "1000", "--seed", "7"]);
        args.extend(extra);
        Proc::spawn(&args, env)
    }

    pub fn json(&self) -> Vec<Value> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.err.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the stdout lines so far.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(&self.json()) {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {timeout:?}; stdout: {:#?}; stderr: {:#?}",
                self.json(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every one of `orgs` has printed a STABLE state line.
    pub fn wait_stable<S: AsRef<str>>(&self, orgs: &[S]) {
        self.wait_for("every connection STABLE", Duration::from_secs(20), |l| {
            orgs.iter().all(|o| stable(l, o.as_ref()))
        });
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needle:?} within {timeout:?}: {:#?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
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
                panic!("no exit within {timeout:?}; stderr: {:#?}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// No line of either stream holds any of `secrets`, a token or basic credentials.
    pub fn assert_no_secrets(&self, secrets: &[String]) {
        let out = self.out.lock().unwrap().clone();
        for line in out.iter().chain(self.stderr().iter()) {
            for s in secrets {
                assert!(!line.contains(s.as_str()), "a secret leaked: {line}");
            }
            assert!(!line.contains("Bearer "), "a bearer token leaked: {line}");
            assert!(!line.contains("Basic "), "basic credentials leaked: {line}");
            assert!(
                !line.to_ascii_lowercase().contains("access_token"),
                "an access token leaked: {line}"
            );
        }
    }

    /// Every stdout line has a known kind and, right after it, the connection it is about.
    pub fn assert_tagged_lines(&self) {
        for line in self.out.lock().unwrap().iter() {
            let v: Value = serde_json::from_str(line).unwrap();
            let kind = v["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("no kind: {line}"));
            assert!(
                [
                    "state",
                    "audit",
                    "alert",
                    "notification",
                    "stats",
                    "stopped",
                    "gap"
                ]
                .contains(&kind),
                "unknown kind {kind}: {line}"
            );
            let prefix = format!("{{\"kind\":\"{kind}\",\"connection\":\"");
            assert!(
                line.starts_with(&prefix),
                "connection not right after kind: {line}"
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

pub fn of<'a>(lines: &'a [Value], kind: &'a str, conn: &'a str) -> impl Iterator<Item = &'a Value> {
    lines
        .iter()
        .filter(move |v| v["kind"] == kind && v["connection"] == conn)
}

pub fn stable(lines: &[Value], conn: &str) -> bool {
    of(lines, "state", conn).any(|v| v["state"] == "STABLE")
}
