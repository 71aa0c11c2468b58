//! `genesys-keepalive fleet`: many organisations in one process, one connection each, from a fleet file.
//!
//! ```toml
//! [defaults]                      # optional: any field of the `run` configuration file
//! region = "eu-west-1"
//! topics = ["v2.users.me.presence"]
//!
//! [[connection]]
//! name = "acme"                   # unique
//! client_id_env = "ACME_CLIENT_ID"          # names of environment variables: secrets never live here
//! client_secret_env = "ACME_CLIENT_SECRET"
//! topics = ["v2.routing.queues.q1.conversations"]   # any `run` field overrides the defaults
//! ```
//!
//! Every line is one of `run`'s JSON lines with `"connection":"<name>"` right after `kind`. A connection
//! that stops on its own prints `{"kind":"stopped","connection":…,"reason":…,"exit_code":N}` and the others
//! go on.

mod session;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use genesys_keepalive::{Config, ProfileKind, Secret};

use crate::checkpoint::StateDir;
use crate::failure::Failure;
use crate::settings::{non_empty, toml_failure, DriverKind, Env, EnvSnapshot};
use crate::shard::Shard;

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464), one `connection` label per
    /// member
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The fleet file (TOML): optional [defaults], one [[connection]] per organisation
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Which async driver runs the connections
    #[arg(long, value_enum, default_value_t = DriverKind::Tokio)]
    pub driver: DriverKind,
    /// Take only the connections whose name falls to shard K (0-based) of N (rendezvous hashing)
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Extra trusted root certificate(s), PEM
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Print a `stats` line per connection this often (0: only the final ones)
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub stats_interval_ms: u64,
    /// Seed for the core's PRNG, mixed with each connection's name
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Keep a checkpoint per connection in DIR/<name>.json (created if needed) so that after a restart
    /// each connection prints the time it was down as a `restart` gap; one DIR per replica
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// One connection of the fleet file, ready to start.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub config: Config,
    /// `--state-dir`: the checkpoint an earlier process left for this connection.
    pub resume_after: Option<std::time::SystemTime>,
}

/// What the session needs besides the members.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub seed: Option<u64>,
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub stats_interval: Option<Duration>,
    /// `--state-dir`: where the checkpoints are written.
    pub state: Option<StateDir>,
}

pub fn main(args: FleetArgs) -> Result<u8, Failure> {
    let mut members = load(&args.config, args.shard, &EnvSnapshot::of_process())?;
    // Checked before anything connects: a bad DIR or checkpoint is exit 2, naming it.
    let state = match &args.state_dir {
        Some(dir) => {
            let dir = StateDir::open(dir)?;
            for m in &mut members {
                m.resume_after = dir.read(&m.name)?;
            }
            Some(dir)
        }
        None => None,
    };
    if let Some(addr) = args.metrics_addr {
        crate::metrics_export::serve(addr)?;
    }
    match args.shard {
        Some(shard) => tracing::info!(
            "shard {shard}: {} connection(s) of {}",
            members.len(),
            args.config.display()
        ),
        None => tracing::info!("{} connection(s)", members.len()),
    }
    let extra_roots = match &args.ca_cert {
        Some(path) => crate::run::load_roots(path)?,
        None => Vec::new(),
    };
    let options = FleetOptions {
        seed: args.seed,
        extra_roots,
        stats_interval: (args.stats_interval_ms > 0)
            .then(|| Duration::from_millis(args.stats_interval_ms)),
        state,
    };
    match args.driver {
        DriverKind::Tokio => session::run_tokio(members, options),
        DriverKind::AsyncStd => session::run_async_std(members, options),
    }
}

/// The fields of a `[[connection]]` that are not `run` fields.
const OWN_FIELDS: [&str; 3] = ["name", "client_id_env", "client_secret_env"];

/// Reads the fleet file, checks every connection (unknown fields, duplicate names, the configuration
/// itself) and returns those of `shard` with their credentials from `env`. Nothing connects before this
/// has returned; any error is exit 2 and names the connection and the field.
pub fn load(path: &Path, shard: Option<Shard>, env: &dyn Env) -> Result<Vec<Member>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::config(format!(
            "cannot read the fleet file {}: {e}; check the --config path",
            path.display()
        ))
    })?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| toml_failure(path, &text, &e))?;
    let at = path.display();
    let defaults = match table.remove("defaults") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(Failure::config(format!("{at}: `defaults` must be a table"))),
    };
    let connections = match table.remove("connection") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => {
            return Err(Failure::config(format!(
                "{at}: `connection` must be an array of tables: write [[connection]]"
            )))
        }
    };
    if let Some(field) = table.keys().next() {
        return Err(Failure::config(format!(
            "{at}: unknown field `{field}` at the top level; a fleet file has [defaults] and \
             [[connection]] tables"
        )));
    }
    check_no_secrets(&defaults, &format!("{at}: [defaults]"))?;
    for field in OWN_FIELDS {
        if defaults.contains_key(field) {
            return Err(Failure::config(format!(
                "{at}: [defaults]: `{field}` belongs in each [[connection]]"
            )));
        }
    }
    // The connections that set no `run` field of their own (most, in a large fleet) share this one.
    let default_config = to_config(defaults.clone(), &format!("{at}: [defaults]"))?;
    if connections.is_empty() {
        return Err(Failure::config(format!(
            "{at}: no [[connection]]: a fleet file needs at least one"
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, value) in connections.into_iter().enumerate() {
        let (name, member) =
            parse_connection(&at.to_string(), i, value, &defaults, &default_config)?;
        if !seen.insert(name.clone()) {
            return Err(Failure::config(format!(
                "{at}: connection `{name}` (#{}): field `name`: duplicate name; every connection needs \
                 its own",
                i + 1
            )));
        }
        if shard.is_none_or(|s| s.owns(&name)) {
            out.push(member);
        }
    }
    // Credentials only for the connections this process takes: a replica needs only its own secrets.
    out.into_iter()
        .map(|m| m.resolve(env))
        .collect::<Result<Vec<_>, _>>()
}

/// A checked `[[connection]]` whose credentials are still to be read.
struct Pending {
    name: String,
    ctx: String,
    config: Config,
    id_env: Option<String>,
    secret_env: Option<String>,
}

fn parse_connection(
    at: &str,
    i: usize,
    value: toml::Value,
    defaults: &toml::Table,
    default_config: &Config,
) -> Result<(String, Pending), Failure> {
    let toml::Value::Table(mut t) = value else {
        return Err(Failure::config(format!(
            "{at}: connection #{}: must be a table",
            i + 1
        )));
    };
    let name = match t.remove("name") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
        Some(_) => {
            return Err(Failure::config(format!(
                "{at}: connection #{}: field `name` must be a non-empty string",
                i + 1
            )))
        }
        None => {
            return Err(Failure::config(format!(
                "{at}: connection #{}: field `name` is missing",
                i + 1
            )))
        }
    };
    let ctx = format!("{at}: connection `{name}` (#{})", i + 1);
    let mut env_name = |field: &str| match t.remove(field) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
        Some(_) => Err(Failure::config(format!(
            "{ctx}: field `{field}` must be the name of an environment variable"
        ))),
    };
    let id_env = env_name("client_id_env")?;
    let secret_env = env_name("client_secret_env")?;
    check_no_secrets(&t, &ctx)?;
    let config = if t.is_empty() {
        // Nothing to merge: the defaults' configuration as it was read, not read again.
        default_config.clone()
    } else {
        let mut merged = defaults.clone();
        merge(&mut merged, t);
        to_config(merged, &ctx)?
    };
    Ok((
        name.clone(),
        Pending {
            name,
            ctx,
            config,
            id_env,
            secret_env,
        },
    ))
}

impl Pending {
    /// Reads the credentials from `env` and validates the configuration.
    fn resolve(self, env: &dyn Env) -> Result<Member, Failure> {
        let Pending {
            name,
            ctx,
            mut config,
            id_env,
            secret_env,
        } = self;
        let read = |field: &str, var: &str| {
            non_empty(env.get(var)).ok_or_else(|| {
                Failure::config(format!(
                    "{ctx}: field `{field}`: the environment variable `{var}` is not set"
                ))
            })
        };
        match (&id_env, &secret_env) {
            (Some(id_var), Some(secret_var)) => {
                config.client_id = Some(read("client_id_env", id_var)?);
                config.client_secret = Some(Secret::new(read("client_secret_env", secret_var)?));
            }
            (None, None) if config.profile == ProfileKind::KeepaliveFrame => {}
            (None, None) => {
                return Err(Failure::config(format!(
                    "{ctx}: fields `client_id_env` and `client_secret_env` are missing; the \
                     notifications profile needs an OAuth client"
                )))
            }
            (Some(_), None) => {
                return Err(Failure::config(format!(
                    "{ctx}: field `client_secret_env` is missing (client_id_env is set)"
                )))
            }
            (None, Some(_)) => {
                return Err(Failure::config(format!(
                    "{ctx}: field `client_id_env` is missing (client_secret_env is set)"
                )))
            }
        }
        config
            .validate()
            .map_err(|e| Failure::config(format!("{ctx}: {e}")))?;
        Ok(Member {
            name,
            config,
            resume_after: None,
        })
    }
}

fn check_no_secrets(t: &toml::Table, ctx: &str) -> Result<(), Failure> {
    for field in ["client_id", "client_secret"] {
        if t.contains_key(field) {
            return Err(Failure::config(format!(
                "{ctx}: field `{field}` is not read from files; name environment variables with \
                 `client_id_env` and `client_secret_env` instead"
            )));
        }
    }
    Ok(())
}

/// `over`'s fields replace `base`'s; tables (e.g. `interval_matrix`) are merged field by field.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn to_config(t: toml::Table, ctx: &str) -> Result<Config, Failure> {
    serde::Deserialize::deserialize(toml::Value::Table(t)).map_err(|e: toml::de::Error| {
        Failure::config(format!(
            "{ctx}: {}; see `genesys-keepalive run --help` for the fields (durations as `*_ms`)",
            e.message().trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct MapEnv(HashMap<&'static str, &'static str>);

    impl Env for MapEnv {
        fn get(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|s| s.to_string())
        }
    }

    fn env() -> MapEnv {
        MapEnv(HashMap::from([
            ("A_ID", "a"),
            ("A_SECRET", "sa"),
            ("B_ID", "b"),
            ("B_SECRET", "sb"),
        ]))
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gk-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const GOOD: &str = "[defaults]\napi_base = \"http://127.0.0.1:1\"\nlogin_base = \"http://127.0.0.1:1\"\n\
        allow_insecure = true\ntopics = [\"v2.d\"]\nidle_timeout_ms = 9000\nack_timeout_ms = 3000\nmin_interval_ms = 500\n\
        [defaults.interval_matrix]\nstable_ms = 3000\ndegraded_ms = 1500\nreconnecting_ms = 750\n\
        [[connection]]\nname = \"a\"\nclient_id_env = \"A_ID\"\nclient_secret_env = \"A_SECRET\"\n\
        [[connection]]\nname = \"b\"\nclient_id_env = \"B_ID\"\nclient_secret_env = \"B_SECRET\"\n\
        topics = [\"v2.b\"]\n[connection.interval_matrix]\nstable_ms = 2000\n";

    #[test]
    fn defaults_apply_and_connections_override() {
        let m = load(&file("good.toml", GOOD), None, &env()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "a");
        assert_eq!(m[0].config.topics, ["v2.d"]);
        assert_eq!(m[0].config.client_id.as_deref(), Some("a"));
        assert_eq!(m[1].config.topics, ["v2.b"]);
        assert_eq!(m[1].config.max_idle, Duration::from_millis(9000));
        assert_eq!(
            m[1].config.interval_matrix.stable,
            Duration::from_millis(2000)
        );
        assert_eq!(
            m[1].config.interval_matrix.degraded,
            Duration::from_millis(1500)
        );
        assert_eq!(m[1].config.client_secret.as_ref().unwrap().expose(), "sb");
    }

    #[test]
    fn a_connection_without_fields_of_its_own_gets_the_defaults_as_merged() {
        // `a` sets nothing of its own (the defaults' configuration is cloned); `c` repeats a default (merged
        // and read again): with the same credentials the two must come out the same.
        let text = format!(
            "{GOOD}[[connection]]\nname = \"c\"\nclient_id_env = \"A_ID\"\nclient_secret_env = \"A_SECRET\"\n\
             idle_timeout_ms = 9000\n"
        );
        let m = load(&file("same.toml", &text), None, &env()).unwrap();
        assert_eq!(m[2].name, "c");
        assert_eq!(m[0].config, m[2].config);
        assert_ne!(m[0].config, m[1].config, "b overrides topics");
        // A field of its own that changes a default still applies.
        let text = format!(
            "{}idle_timeout_ms = 8000\n",
            text.strip_suffix("idle_timeout_ms = 9000\n").unwrap()
        );
        let m = load(&file("differ.toml", &text), None, &env()).unwrap();
        assert_eq!(m[2].config.max_idle, Duration::from_millis(8000));
        assert_eq!(m[0].config.max_idle, Duration::from_millis(9000));
    }

    fn refused(name: &str, text: &str, env: &dyn Env) -> String {
        let e = load(&file(name, text), None, env).unwrap_err();
        assert_eq!(e.code, 2);
        e.message
    }

    #[test]
    fn bad_files_name_the_connection_and_the_field() {
        let m = refused(
            "unknown.toml",
            &GOOD.replace("topics = [\"v2.b\"]", "bogus = 1"),
            &env(),
        );
        assert!(m.contains("connection `b`") && m.contains("bogus"), "{m}");
        let m = refused(
            "dup.toml",
            &GOOD.replace("name = \"b\"", "name = \"a\""),
            &env(),
        );
        assert!(
            m.contains("connection `a`") && m.contains("duplicate"),
            "{m}"
        );
        let m = refused(
            "var.toml",
            GOOD,
            &MapEnv(HashMap::from([("A_ID", "a"), ("A_SECRET", "s")])),
        );
        assert!(m.contains("connection `b`") && m.contains("B_ID"), "{m}");
        let m = refused(
            "secret.toml",
            &GOOD.replace("topics = [\"v2.b\"]", "client_secret = \"x\""),
            &env(),
        );
        assert!(m.contains("client_secret") && !m.contains("\"x\""), "{m}");
        let m = refused("top.toml", &format!("colour = 1\n{GOOD}"), &env());
        assert!(m.contains("colour"), "{m}");
        let m = refused(
            "defaults.toml",
            &GOOD.replace("idle_timeout_ms", "idle_timeout"),
            &env(),
        );
        assert!(
            m.contains("[defaults]") && m.contains("idle_timeout"),
            "{m}"
        );
    }

    #[test]
    fn a_shard_reads_only_its_own_secrets() {
        // Both names fall to shard 1 of 2 (fixed by the hash, see shard.rs).
        assert_eq!(
            (
                crate::shard::shard_of("a", 2),
                crate::shard::shard_of("b", 2)
            ),
            (1, 1)
        );
        let path = file("shard.toml", GOOD);
        let none = MapEnv(HashMap::new());
        let m = load(&path, Some(Shard { index: 0, count: 2 }), &none).unwrap();
        assert!(m.is_empty(), "shard 0 takes neither and needs no secret");
        let e = load(&path, Some(Shard { index: 1, count: 2 }), &none).unwrap_err();
        assert!(
            e.message.contains("connection `a`") && e.message.contains("A_ID"),
            "{}",
            e.message
        );
        // A bad file is refused by every shard, even for a connection it does not take.
        let bad = file(
            "shard-bad.toml",
            &GOOD.replace("name = \"b\"", "name = \"a\""),
        );
        let e = load(&bad, Some(Shard { index: 0, count: 2 }), &none).unwrap_err();
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }
}
