//! A real nginx (the Debian package's `/usr/sbin/nginx`) as a WebSocket reverse proxy in front of a
//! [`Gateway`], on a loopback port, started by the test in a temporary prefix (`daemon off`, its own pid
//! file, logs and temp paths: nothing of the system's nginx is touched), and the scenarios that run a
//! driver through it: heartbeats holding one socket past nginx's `proxy_read_timeout`, a reload (SIGHUP)
//! mid-stream, and a stop and start.
//!
//! Without nginx the scenarios print why and pass, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use genesys_keepalive::{AuditEvent, Config, State};

use crate::gap_scenarios::gaps_of;
use crate::gateway::Gateway;
use crate::scenarios::{
    self, assert_exactly_once, config, connect_ok, gateway, shutdown_and_check, ClientReport,
    DriverUnderTest, TOPIC,
};

/// nginx's `proxy_read_timeout` (and `proxy_send_timeout`): a socket silent this long upstream is closed.
pub const PROXY_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reload lets the old workers keep their connections (`worker_shutdown_timeout`).
pub const WORKER_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Where nginx is: `$NGINX` if set, else `/usr/sbin/nginx`, else `nginx` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NGINX") {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nginx"))
        .find(|p| p.exists())
}

/// nginx's path, or `None` after printing why the test is skipped. Panics under `CI=true`: CI installs
/// nginx, so a missing one there is a failure, not a skip.
pub fn require(test: &str) -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: nginx is not installed (apt-get install nginx) and CI=true: failing, not skipping"
        );
        eprintln!(
            "{test}: SKIPPED, nginx is not installed (apt-get install nginx; or set NGINX=<path>)"
        );
    }
    found
}

/// A running nginx proxying `127.0.0.1:<port>` to an upstream on loopback.
pub struct Nginx {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn conf(dir: &Path, port: u16, upstream: u16) -> String {
    let d = dir.display();
    let read = PROXY_READ_TIMEOUT.as_secs();
    let shutdown = WORKER_SHUTDOWN_TIMEOUT.as_secs();
    format!(
        "daemon off;
worker_processes 1;
worker_shutdown_timeout {shutdown}s;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout {read}s;
            proxy_send_timeout {read}s;
            proxy_buffering off;
        }}
    }}
}}
"
    )
}

impl Nginx {
    /// Writes the configuration into a fresh temporary prefix and starts nginx (`bin`) in front of
    /// `127.0.0.1:<upstream>`; returns once it accepts connections.
    pub fn start(bin: PathBuf, upstream: u16) -> io::Result<Nginx> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gk-nginx-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // nginx's workers may run as another user (root's nginx drops to `nobody`): let them write here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        }
        let port = free_port()?;
        std::fs::write(dir.join("nginx.conf"), conf(&dir, port, upstream))?;
        let mut nginx = Nginx {
            bin,
            dir,
            port,
            child: None,
        };
        nginx.start_again()?;
        Ok(nginx)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.join("error.log"));
        cmd
    }

    /// The proxy's base URL, `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts nginx again (after [`Nginx::stop`]) on the same port; returns once it accepts connections.
    pub fn start_again(&mut self) -> io::Result<()> {
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(io::Error::other(format!(
                    "nginx exited ({status}) at start: {}",
                    self.error_log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "nginx did not accept on {addr} within 10 s: {}",
            self.error_log_tail()
        )))
    }

    fn signal(&self, what: &str) -> io::Result<()> {
        let status = self.command().arg("-s").arg(what).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "nginx -s {what}: {status}: {}",
                self.error_log_tail()
            )))
        }
    }

    /// Reloads the configuration (`nginx -s reload`, a SIGHUP to the master): new workers take new
    /// connections, the old ones close theirs after [`WORKER_SHUTDOWN_TIMEOUT`].
    pub fn reload(&self) -> io::Result<()> {
        self.signal("reload")
    }

    /// Stops nginx (`nginx -s stop`, a SIGTERM to the master) and waits until it has exited: every
    /// proxied connection is cut.
    pub fn stop(&mut self) -> io::Result<()> {
        self.signal("stop")?;
        if let Some(mut c) = self.child.take() {
            c.wait()?;
        }
        Ok(())
    }

    /// The last lines of nginx's error log (for failure messages).
    pub fn error_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Stop through the master, so that it takes its workers with it (a SIGKILL to the master alone
            // leaves them running, orphaned); kill it only if it has not gone within 5 s.
            if self.signal("stop").is_ok() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Expands to the nginx scenarios as `#[test]`s for a driver: `nginx_suite!(MyDriver::new());`.
#[macro_export]
macro_rules! nginx_suite {
    ($make:expr) => {
        $crate::nginx_suite!(@tests $make; nginx_heartbeats_hold_one_socket, nginx_reload_and_restart);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let driver = $make;
                $crate::scenarios::DriverUnderTest::block_on(
                    &driver,
                    ::std::boxed::Box::pin($crate::nginx::$name(&driver)),
                );
            }
        )*
    };
}

/// The scenarios' config pointed at nginx (REST and WebSocket both through it), never giving up while
/// nginx is down.
fn config_via(gw: &Gateway, nginx: &Nginx) -> Config {
    config(gw)
        .api_base(nginx.base_url())
        .login_base(nginx.base_url())
        .max_reconnect_attempts(1_000)
        .build_unchecked()
}

/// One notification every 100 ms for `span` while collecting them; returns the seqs with the times they
/// were published (monotonic, and wall-clock for comparing with gap reports).
async fn publish_for<D: DriverUnderTest + ?Sized>(
    d: &D,
    gw: &Gateway,
    c: &mut scenarios::Client,
    span: Duration,
    seen: &mut BTreeMap<u64, u32>,
) -> Vec<(u64, Instant, SystemTime)> {
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < span {
        let (at, wall) = (Instant::now(), SystemTime::now());
        out.push((gw.publish(TOPIC, serde_json::json!({})), at, wall));
        c.collect_seqs(d, Duration::from_millis(100), |_| false, seen)
            .await;
    }
    out
}

/// nginx with a 2 s `proxy_read_timeout` in front of the gateway: the client's heartbeats (400 ms) keep
/// the upstream busy, so one socket holds for 30 s with zero reconnects, and every notification arrives
/// once.
pub async fn nginx_heartbeats_hold_one_socket<D: DriverUnderTest + ?Sized>(d: &D) {
    let Some(bin) = require("nginx_heartbeats_hold_one_socket") else {
        return;
    };
    let gw = gateway(|_| {});
    let nginx = Nginx::start(bin, gw.port()).expect("nginx starts");
    let mut c = connect_ok(d, config_via(&gw, &nginx)).await;
    let mut seen = BTreeMap::new();
    let hold = Duration::from_secs(30);
    let published = publish_for(d, &gw, &mut c, hold, &mut seen).await;
    let expected: Vec<u64> = published.iter().map(|(s, _, _)| *s).collect();
    let n = expected.len();
    c.collect_seqs(d, Duration::from_secs(3), |s| s.len() >= n, &mut seen)
        .await;
    let trace = c.trace();
    assert_exactly_once(d.name(), &expected, &seen, &trace);
    let s = c.handle.stats();
    let why = format!("[{}] {s:?}\ntrace:\n{trace}", d.name());
    assert_eq!(s.reconnects, 0, "{why}");
    assert_eq!(s.connections_opened, 1, "{why}");
    assert_eq!(s.dead_peers, 0, "{why}");
    assert_eq!(s.state, State::Stable, "{why}");
    // 30 s of 400 ms heartbeats: well over half of them acked, whatever the load.
    assert!(s.heartbeats_acked >= 30, "{why}");
    assert_eq!(gw.stats().sockets_opened, 1, "{:?}", gw.stats());
    println!(
        "[{}] nginx, 30 s: 1 socket, {} heartbeats acked, {} of {n} notifications delivered, 0 reconnects",
        d.name(),
        s.heartbeats_acked,
        seen.len()
    );
    shutdown_and_check(d, c).await;
}

/// Waits until the client has opened `opened` sockets and is STABLE; returns how long that took.
async fn recovered<D: DriverUnderTest + ?Sized>(
    d: &D,
    c: &mut scenarios::Client,
    opened: u64,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    let ok = scenarios::wait_stats(d, c.handle.as_ref(), limit, |s| {
        s.state == State::Stable && s.connections_opened >= opened
    })
    .await;
    if let Err(s) = ok {
        panic!(
            "[{}] not STABLE with {opened} sockets opened within {limit:?}: {s:?}\ntrace:\n{}",
            d.name(),
            c.trace()
        );
    }
    start.elapsed()
}

/// A gap's ends are stamped by the client, a publish time by the test: this much slack between them.
const SLACK: Duration = Duration::from_millis(100);

/// How many times the client reported losing its socket (audit `DISCONNECTED`).
fn disconnects(c: &mut scenarios::Client) -> usize {
    c.reports()
        .iter()
        .filter(|r| matches!(r, ClientReport::Audit(a) if a.event == AuditEvent::Disconnected))
        .count()
}

/// nginx reloaded (SIGHUP) mid-stream, then stopped and started again: after each the client reconnects
/// within its backoff bound and reports the outage as a gap; no notification is duplicated, and every one
/// not delivered lies inside a reported gap.
pub async fn nginx_reload_and_restart<D: DriverUnderTest + ?Sized>(d: &D) {
    let Some(bin) = require("nginx_reload_and_restart") else {
        return;
    };
    let gw = gateway(|_| {});
    let mut nginx = Nginx::start(bin, gw.port()).expect("nginx starts");
    let cfg = config_via(&gw, &nginx);
    // A reconnect waits at most backoff_max; the handshake and REST setup on loopback add little.
    let bound = cfg.backoff_max + Duration::from_secs(3);
    let mut c = connect_ok(d, cfg).await;
    recovered(d, &mut c, 1, Duration::from_secs(5)).await;
    let mut seen = BTreeMap::new();
    let mut published = publish_for(d, &gw, &mut c, Duration::from_secs(2), &mut seen).await;

    // Reload: the old worker drops the socket after worker_shutdown_timeout.
    let reload_at = Instant::now();
    nginx.reload().expect("nginx reloads");
    let opened = c.handle.stats().connections_opened;
    let limit = WORKER_SHUTDOWN_TIMEOUT + bound;
    let mut during = Vec::new();
    let start = Instant::now();
    while c.handle.stats().connections_opened <= opened && start.elapsed() < limit {
        during.extend(publish_for(d, &gw, &mut c, Duration::from_millis(100), &mut seen).await);
    }
    let after_reload = recovered(d, &mut c, opened + 1, bound).await;
    let reload_window = (reload_at, Instant::now());
    let reload_took = reload_at.elapsed();
    during.extend(publish_for(d, &gw, &mut c, Duration::from_secs(2), &mut seen).await);
    published.extend(during);

    // Stop, 2 s down, start again.
    let stop_at = Instant::now();
    nginx.stop().expect("nginx stops");
    published.extend(publish_for(d, &gw, &mut c, Duration::from_secs(2), &mut seen).await);
    nginx.start_again().expect("nginx starts again");
    let started = Instant::now();
    let opened = c.handle.stats().connections_opened;
    let mut during = Vec::new();
    while c.handle.stats().connections_opened <= opened && started.elapsed() < bound {
        during.extend(publish_for(d, &gw, &mut c, Duration::from_millis(100), &mut seen).await);
    }
    let after_start = recovered(d, &mut c, opened + 1, bound).await;
    let restart_took = started.elapsed();
    let restart_window = (stop_at, Instant::now());
    published.extend(during);
    published.extend(publish_for(d, &gw, &mut c, Duration::from_secs(2), &mut seen).await);
    let n = published.len();
    c.collect_seqs(d, Duration::from_secs(2), |s| s.len() >= n, &mut seen)
        .await;

    let trace = c.trace();
    let gaps = gaps_of(&mut c);
    let in_gap = |t: SystemTime| {
        gaps.iter()
            .any(|g| g.from <= t + SLACK && t <= g.to + SLACK)
    };
    let undelivered: Vec<&(u64, Instant, SystemTime)> = published
        .iter()
        .filter(|(q, _, _)| !seen.contains_key(q))
        .collect();
    let outside: Vec<u64> = undelivered
        .iter()
        .filter(|(_, _, w)| !in_gap(*w))
        .map(|(q, _, _)| *q)
        .collect();
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let s = c.handle.stats();
    let why = format!(
        "[{}] {s:?}\ngaps: {gaps:?}\nnginx:\n{}\ntrace:\n{trace}",
        d.name(),
        nginx.error_log_tail()
    );
    assert!(dup.is_empty(), "duplicated {dup:?}\n{why}");
    assert!(
        outside.is_empty(),
        "{} of {} undelivered lie outside every gap: {outside:?}\n{why}",
        outside.len(),
        undelivered.len()
    );
    // Each outage was seen and reported as a gap, and nothing else went wrong.
    let wall = |t: Instant| SystemTime::now() - t.elapsed();
    for (name, (a, b)) in [("reload", reload_window), ("restart", restart_window)] {
        let (a, b) = (wall(a), wall(b));
        assert!(
            gaps.iter()
                .any(|g| g.from <= b + SLACK && a <= g.to + SLACK),
            "the {name} outage was reported by no gap\n{why}"
        );
    }
    assert!(s.reconnects >= 2, "{why}");
    assert!(disconnects(&mut c) >= 2, "{why}");
    assert_eq!(s.state, State::Stable, "{why}");
    assert!(after_reload <= bound && after_start <= bound, "{why}");
    let in_outages = published
        .iter()
        .filter(|(_, t, _)| {
            [reload_window, restart_window]
                .iter()
                .any(|(a, b)| a <= t && t <= b)
        })
        .count();
    println!(
        "[{}] nginx reload: recovered {} ms after the SIGHUP; stop + 2 s + start: recovered {} ms after \
         the start (bound {} ms); {} reconnects, {} gaps reported ({} ms in all); published {n}, {} inside \
         the outage windows, {} not delivered (all inside gaps), {} delivered, 0 duplicated",
        d.name(),
        reload_took.as_millis(),
        restart_took.as_millis(),
        bound.as_millis(),
        s.reconnects,
        gaps.len(),
        gaps.iter().map(|g| g.duration().as_millis()).sum::<u128>(),
        in_outages,
        undelivered.len(),
        seen.len(),
    );
    shutdown_and_check(d, c).await;
}
