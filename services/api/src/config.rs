//! The api's typed configuration: flags with `COURIER_*` environment fallbacks.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use courier_core::{
    auth::{JwtArgs, Secret},
    client_addr::TrustedProxies,
    config::{NatsArgs, TelemetryArgs, duration_in, millis_or_duration, seconds_or_duration},
    rate::Rate,
};

#[derive(Debug, Clone, Parser)]
#[command(name = "courier-api", about = "Courier REST API: collections, events through the outbox")]
pub struct ApiConfig {
    /// Address to listen on.
    #[arg(long, env = "COURIER_API_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// MongoDB connection string (a replica set, so transactions work). `--help` never shows
    /// its value from the environment: it usually carries the password.
    #[arg(
        long,
        env = "COURIER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true",
        hide_env_values = true
    )]
    pub mongodb_uri: String,

    /// Database holding documents and the outbox.
    #[arg(long, env = "COURIER_MONGODB_DATABASE", default_value = "courier")]
    pub mongodb_database: String,

    /// How long a request waits for MongoDB before answering 503: `250ms`, `5s`, `2m`, `1h` (a
    /// bare number is milliseconds).
    #[arg(long, env = "COURIER_MONGODB_TIMEOUT", value_parser = millis_or_duration, default_value = "3s")]
    pub mongodb_timeout: Duration,

    /// Server-side time limit of every MongoDB query and commit (maxTimeMS): a query running
    /// longer is stopped and answered 503 `query_timeout`. `250ms`, `5s`, `2m` (a bare number is
    /// milliseconds).
    #[arg(long, env = "COURIER_MONGODB_QUERY_TIMEOUT", value_parser = duration_in(millis_or_duration, Duration::from_millis(1), Duration::from_secs(600)), default_value = "5s")]
    pub mongodb_query_timeout: Duration,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Largest accepted request body, in bytes (larger → 413).
    #[arg(long, env = "COURIER_API_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// How often the outbox relay looks for events the fast path did not publish: `250ms`, `5s`,
    /// `2m`, `1h` (a bare number is milliseconds).
    #[arg(long, env = "COURIER_OUTBOX_RELAY_INTERVAL", value_parser = millis_or_duration, default_value = "250ms")]
    pub relay_interval: Duration,

    /// How old an outbox record must be before the relay takes it over from the fast path:
    /// `250ms`, `5s`, `2m`, `1h` (a bare number is milliseconds).
    #[arg(long, env = "COURIER_OUTBOX_RELAY_GRACE", value_parser = millis_or_duration, default_value = "1s")]
    pub relay_grace: Duration,

    /// Most outbox records that may wait to be published (e.g. while NATS is unreachable); over
    /// it, writes are refused with 503 `outbox_full` until the backlog is under 90% of it.
    #[arg(long, env = "COURIER_OUTBOX_MAX_PENDING", value_parser = clap::value_parser!(u64).range(1..), default_value_t = courier_store::outbox::DEFAULT_MAX_PENDING)]
    pub outbox_max_pending: u64,

    /// How often the scheduler moves due scheduled tasks into the outbox: `250ms`, `5s`, `2m`,
    /// `1h` (a bare number is milliseconds). A task with `not_before` is enqueued within about
    /// this long after its time.
    #[arg(long, env = "COURIER_SCHEDULER_INTERVAL", value_parser = millis_or_duration, default_value = "1s")]
    pub scheduler_interval: Duration,

    /// How often the api polls JetStream for the `courier_jetstream_*` gauges: `250ms`, `5s`,
    /// `2m`, `1h` (a bare number is milliseconds); 0 turns the poll off.
    #[arg(long, env = "COURIER_JETSTREAM_METRICS_INTERVAL", value_parser = millis_or_duration, default_value = "5s")]
    pub jetstream_metrics_interval: Duration,

    /// The collections to serve (`collections.yaml` format); reloaded when it changes.
    #[arg(long, env = "COURIER_COLLECTIONS_FILE", default_value = "collections.yaml")]
    pub collections_file: PathBuf,

    /// How often the collections file is checked for changes: `250ms`, `5s`, `2m`, `1h` (a bare
    /// number is milliseconds).
    #[arg(long, env = "COURIER_COLLECTIONS_RELOAD_INTERVAL", value_parser = millis_or_duration, default_value = "2s")]
    pub collections_reload_interval: Duration,

    /// Serve the web app's files from this directory instead of the copies built into the
    /// binary (for working on `services/api/web/` without rebuilding; only the app's own file
    /// names are served).
    #[arg(long, env = "COURIER_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// The broadcaster's WebSocket URL as the web app's browsers reach it: `ws://…` or `wss://…`,
    /// or a path such as `/ws` (same host as the page, e.g. behind an Ingress). Empty: the
    /// page's host on port 8765, path `/ws`.
    #[arg(long, env = "COURIER_PUBLIC_WS_URL", default_value = "")]
    pub public_ws_url: String,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Lifetime of refresh tokens: `720h`, `30m`, `90s` (a bare number is seconds). Each
    /// refresh issues a new token with this lifetime (sliding), never past the absolute one.
    #[arg(long = "refresh-ttl-secs", env = "COURIER_REFRESH_TTL_SECS", value_parser = seconds_or_duration, default_value = "720h")]
    pub refresh_ttl: Duration,

    /// Absolute lifetime of a sign-in session: its refresh tokens stop working this long after
    /// the login, however often they rotate (`720h`, `30m`; a bare number is seconds).
    #[arg(long = "refresh-absolute-ttl", env = "COURIER_REFRESH_ABSOLUTE_TTL", value_parser = seconds_or_duration, default_value = "720h")]
    pub refresh_absolute_ttl: Duration,

    /// Username granted the `admin` role at start-up: created with the password file when
    /// missing; an existing account only if its password is the configured one (the name alone
    /// grants nothing). Registrations wait until this is done. There is no default admin.
    #[arg(long, env = "COURIER_BOOTSTRAP_ADMIN")]
    pub bootstrap_admin: Option<String>,

    /// File holding the bootstrap admin's password: the user is created with it when missing
    /// (an existing user's password is never changed).
    #[arg(long, env = "COURIER_BOOTSTRAP_ADMIN_PASSWORD_FILE")]
    pub bootstrap_admin_password_file: Option<PathBuf>,

    /// The bootstrap admin's password given directly (tests and tools; never from flags or
    /// the environment — use the file).
    #[arg(skip)]
    pub bootstrap_admin_password: Option<Secret>,

    /// Failed logins per (username, client address) within the window before that address gets
    /// 429 for that username (other addresses still sign in as it).
    #[arg(long, env = "COURIER_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: usize,

    /// Failed logins per username from all addresses within the window past which each address
    /// may fail only once for it (a client that has not failed still gets its password checked).
    #[arg(long, env = "COURIER_LOGIN_MAX_FAILURES_PER_USER", default_value_t = 50)]
    pub login_max_failures_per_user: usize,

    /// How long the answer to a failed login is held back, doubling with each further failure of
    /// the same username from the same address (at most 5s): `250ms`, `1s`; 0 turns it off.
    #[arg(long, env = "COURIER_LOGIN_FAILURE_DELAY", value_parser = millis_or_duration, default_value = "0")]
    pub login_failure_delay: Duration,

    /// Login attempts per client address within the window before 429.
    #[arg(long, env = "COURIER_LOGIN_MAX_ATTEMPTS_PER_ADDRESS", default_value_t = 30)]
    pub login_max_attempts_per_address: usize,

    /// The rate-limit window: `5m`, `90s` (a bare number is seconds).
    #[arg(long = "login-window-secs", env = "COURIER_LOGIN_WINDOW_SECS", value_parser = seconds_or_duration, default_value = "5m")]
    pub login_window: Duration,

    /// Chat messages a user may send within the send window before 429.
    #[arg(long, env = "COURIER_CHAT_SEND_LIMIT", default_value_t = 10)]
    pub chat_send_limit: usize,

    /// The chat send window (`250ms`, `10s`, `1m`; a bare number is ms).
    #[arg(long, env = "COURIER_CHAT_SEND_WINDOW", value_parser = millis_or_duration, default_value = "10s")]
    pub chat_send_window: Duration,

    /// Chat rooms a user may create within the room window before 429.
    #[arg(long, env = "COURIER_CHAT_ROOM_LIMIT", default_value_t = 10)]
    pub chat_room_limit: usize,

    /// The chat room-creation window (`250ms`, `10s`, `1m`; a bare number is ms).
    #[arg(long, env = "COURIER_CHAT_ROOM_WINDOW", value_parser = millis_or_duration, default_value = "1m")]
    pub chat_room_window: Duration,

    /// How often one writer (a signed-in user, else a client address) may write documents of a
    /// collection that declares no `rate:` in the collections file: `60/min`, `10/s`, `5/10s`.
    /// Past it: 429 with `Retry-After`.
    #[arg(long, env = "COURIER_WRITE_RATE", default_value = "60/min")]
    pub write_rate: Rate,

    /// How often one user may change chat (send, edit, delete, react, read markers, members,
    /// rooms), all together: `120/min`.
    #[arg(long, env = "COURIER_CHAT_WRITE_RATE", default_value = "120/min")]
    pub chat_write_rate: Rate,

    /// Bytes one writer's writes may put in the streams (events and tasks) per hour; past it,
    /// its writes get 429 until older ones age out. 0: no budget.
    #[arg(long, env = "COURIER_WRITE_BYTES_PER_HOUR", default_value_t = 16 * 1024 * 1024)]
    pub write_bytes_per_hour: u64,

    /// Which proxies in front of the api to believe about the client address
    /// (`X-Forwarded-For`): `0` none (the peer is the client), a hop count (`1` behind one
    /// Ingress), or a comma-separated CIDR list of the proxies' addresses.
    #[arg(long, env = "COURIER_TRUSTED_PROXIES", default_value = "0")]
    pub trusted_proxies: TrustedProxies,

    /// Registrations per client address within the registration window before 429.
    #[arg(long, env = "COURIER_REGISTER_MAX_PER_ADDRESS", default_value_t = 20)]
    pub register_max_per_address: usize,

    /// The registration rate-limit window: `10m`, `1h` (a bare number is seconds).
    #[arg(long, env = "COURIER_REGISTER_WINDOW", value_parser = seconds_or_duration, default_value = "10m")]
    pub register_window: Duration,

    /// Password hashes (argon2id, ~19 MiB each) computed at once; registrations and logins
    /// beyond this wait their turn, so a burst cannot exhaust memory.
    #[arg(long, env = "COURIER_PASSWORD_HASH_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub password_hash_concurrency: u16,

    /// Test-only fault injection: `exit-after-commit` makes the process exit right after a
    /// write commits and before its event is published (the outbox relay must recover it).
    #[arg(long, env = "COURIER_API_FAULT", hide = true)]
    pub fault: Option<Fault>,

    /// Serve the seed systems' deprecated REST paths (`/api/product/`, `/api/pets/`, …; see
    /// docs/migrating.md). Off unless asked for; `./dev up` turns it on.
    #[arg(long, env = "COURIER_SEED_COMPAT", default_value_t = false, action = clap::ArgAction::Set)]
    pub seed_compat: bool,

    /// Accept the web app's browser-side observations (`POST /api/v1/telemetry/web`: api call
    /// timings, WebSocket failures, uncaught errors; anonymous, no personal data) and tell the
    /// app to send them. `false`: the endpoint answers 404 and the app sends nothing.
    #[arg(long, env = "COURIER_WEB_TELEMETRY", default_value_t = true, action = clap::ArgAction::Set)]
    pub web_telemetry: bool,

    /// Web telemetry reports accepted per client address and minute (the app sends one every
    /// 30 s, and one when a page is hidden).
    #[arg(long, env = "COURIER_WEB_TELEMETRY_REPORTS_PER_MINUTE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub web_telemetry_reports_per_minute: u32,

    #[command(flatten)]
    pub http_limits: crate::limits::HttpLimitArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// An administration command instead of serving (it uses the same MongoDB settings).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `courier-api <command>`: administration against the store, without serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Grants a role (e.g. `admin`) to an existing user; it shows in the user's tokens from the
    /// next login or refresh.
    GrantRole {
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
    },
}

/// Faults the chaos tests inject into a real api process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    ExitAfterCommit,
}

impl ApiConfig {
    /// Defaults for the given dependencies, listening on an ephemeral local port (tests, tools).
    pub fn for_local(mongodb_uri: &str, mongodb_database: &str, nats_url: &str) -> Self {
        let mut config = ApiConfig::parse_from(["courier-api"]);
        config.listen = "127.0.0.1:0".parse().expect("valid address");
        config.mongodb_uri = mongodb_uri.to_owned();
        config.mongodb_database = mongodb_database.to_owned();
        config.nats.nats_url = nats_url.to_owned();
        config.collections_file =
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../collections.yaml"));
        // A random key per call: local instances never share a built-in secret.
        let random: [u8; 32] = rand::random();
        config.jwt.secret = Some(Secret(random.iter().map(|b| format!("{b:02x}")).collect()));
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_role_is_a_subcommand_with_the_store_settings() {
        let config = ApiConfig::try_parse_from([
            "courier-api",
            "--mongodb-database",
            "shop",
            "grant-role",
            "--username",
            "ana",
            "--role",
            "admin",
        ])
        .unwrap();
        assert_eq!(config.mongodb_database, "shop");
        assert!(matches!(
            config.command,
            Some(Command::GrantRole { ref username, ref role }) if username == "ana" && role == "admin"
        ));
    }

    #[test]
    fn durations_take_a_unit_or_the_legacy_bare_number() {
        let three = Duration::from_secs(3);
        for text in ["3000ms", "3s", "3000"] {
            let config = ApiConfig::try_parse_from([
                "courier-api",
                "--mongodb-timeout",
                text,
                "--relay-interval",
                text,
                "--relay-grace",
                text,
                "--jetstream-metrics-interval",
                text,
                "--scheduler-interval",
                text,
                "--collections-reload-interval",
                text,
            ])
            .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(
                [
                    config.mongodb_timeout,
                    config.relay_interval,
                    config.relay_grace,
                    config.jetstream_metrics_interval,
                    config.scheduler_interval,
                    config.collections_reload_interval,
                ],
                [three; 6],
                "{text}"
            );
        }
        for text in ["3000ms", "3s", "3"] {
            let config = ApiConfig::try_parse_from([
                "courier-api",
                "--refresh-ttl-secs",
                text,
                "--login-window-secs",
                text,
                "--jwt-access-ttl-secs",
                text,
            ])
            .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(
                [config.refresh_ttl, config.login_window, config.jwt.access_ttl],
                [three; 3]
            );
        }
        let defaults = ApiConfig::parse_from(["courier-api"]);
        let command = <ApiConfig as clap::CommandFactory>::command();
        let uri = command.get_arguments().find(|a| a.get_id() == "mongodb_uri").unwrap();
        assert!(uri.is_hide_env_values_set(), "the MongoDB URI carries its password");
        assert_eq!(defaults.refresh_absolute_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(defaults.trusted_proxies, TrustedProxies::None);
        assert!(defaults.bootstrap_admin.is_none() && defaults.command.is_none());
        assert_eq!(defaults.mongodb_timeout, three);
        assert_eq!(defaults.refresh_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(defaults.login_window, Duration::from_secs(300));
        let err = ApiConfig::try_parse_from(["courier-api", "--mongodb-timeout", "3 seconds"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("250ms, 5s, 2m, 1h or 7d"), "{err}");
    }
}
