//! Config pieces every service shares, read from flags with `COURIER_*` environment fallbacks:
//! the one duration syntax of every `COURIER_*` duration, the one instance identity (host name
//! plus pid), and the one way services connect to NATS.

use std::{fmt, io::Read, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured: for local development.
    Pretty,
    /// One JSON object per line: for Kubernetes and log shippers.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = "COURIER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,courier_api=debug`.
    #[arg(long, env = "COURIER_LOG", default_value = "info")]
    pub log_filter: String,
}

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(
        long = "nats-url",
        env = "COURIER_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,
    /// Replicas for the JetStream streams Courier creates (3 on a production NATS cluster).
    #[arg(long, env = "COURIER_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Most bytes the EVENTS stream keeps (per replica). When it is full, writes are refused
    /// with 503 `stream_full` until events age out. The api applies it; give every component the
    /// same value (the others use it only to create a missing stream).
    #[arg(long, env = "COURIER_EVENTS_MAX_BYTES", value_parser = clap::value_parser!(i64).range(1..), default_value_t = 1 << 30)]
    pub events_max_bytes: i64,
    /// Most bytes the TASKS stream keeps (per replica). When it is full, writes that enqueue a
    /// task are refused with 503 `stream_full` until workers drain it. Same value everywhere.
    #[arg(long, env = "COURIER_TASKS_MAX_BYTES", value_parser = clap::value_parser!(i64).range(1..), default_value_t = 256 << 20)]
    pub tasks_max_bytes: i64,
    /// Most bytes the DLQ stream keeps (per replica). When it is full the oldest dead letters
    /// make room (they also expire after 14 days), so dead-lettering never stalls the workers.
    #[arg(long, env = "COURIER_DLQ_MAX_BYTES", value_parser = clap::value_parser!(i64).range(1..), default_value_t = crate::jetstream::DLQ_MAX_BYTES)]
    pub dlq_max_bytes: i64,
    #[command(flatten)]
    pub auth: NatsAuthArgs,
}

impl NatsArgs {
    /// The streams' settings from these arguments.
    pub fn streams(&self) -> crate::jetstream::StreamSettings {
        crate::jetstream::StreamSettings {
            replicas: self.stream_replicas,
            events_max_bytes: self.events_max_bytes,
            tasks_max_bytes: self.tasks_max_bytes,
            dlq_max_bytes: self.dlq_max_bytes,
        }
    }
}

/// This component's own NATS user (docs/security.md): each component has one, with subject
/// permissions on the server. Both absent: connect without credentials (a server without auth).
#[derive(Debug, Clone, Default, Args)]
pub struct NatsAuthArgs {
    /// NATS user of this component (with --nats-password-file). Its replies arrive under
    /// `_INBOX.<user>.`, which the server lets only this user subscribe to.
    #[arg(long = "nats-user", env = "COURIER_NATS_USER", requires = "nats_password_file")]
    pub nats_user: Option<String>,
    /// File holding the password of --nats-user (e.g. a mounted Secret); a trailing newline is
    /// ignored. The password itself is never taken from a flag or printed.
    #[arg(long = "nats-password-file", env = "COURIER_NATS_PASSWORD_FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
}

/// Longest NATS user name accepted (it becomes a subject token).
pub const MAX_NATS_USER_LEN: usize = 64;
/// Largest password file read.
pub const MAX_NATS_PASSWORD_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error(
        "NATS user '{0}' must be 1 to {MAX_NATS_USER_LEN} ASCII letters, digits, '-' or '_' (it names the reply inbox)"
    )]
    InvalidUser(String),
    #[error("cannot read the NATS password file {path}: {source}")]
    PasswordFile { path: PathBuf, source: std::io::Error },
    #[error("the NATS password file {0} is empty")]
    EmptyPassword(PathBuf),
    #[error("the NATS password file {0} is over {MAX_NATS_PASSWORD_BYTES} bytes")]
    PasswordTooLong(PathBuf),
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

/// A user and its password, read from the configured file.
#[derive(Clone)]
pub struct NatsCredentials {
    pub user: String,
    password: crate::auth::Secret,
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCredentials").field("user", &self.user).finish_non_exhaustive()
    }
}

impl NatsCredentials {
    /// The prefix of this user's reply subjects: `_INBOX.<user>`.
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX.{}", self.user)
    }
}

impl NatsAuthArgs {
    /// The configured credentials (`None` without a user), the password read from its file.
    pub fn credentials(&self) -> Result<Option<NatsCredentials>, NatsConnectError> {
        let (Some(user), Some(path)) = (&self.nats_user, &self.nats_password_file) else {
            return Ok(None);
        };
        let valid_user = !user.is_empty()
            && user.len() <= MAX_NATS_USER_LEN
            && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_user {
            return Err(NatsConnectError::InvalidUser(user.chars().take(80).collect()));
        }
        let read_error = |source| NatsConnectError::PasswordFile { path: path.clone(), source };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_NATS_PASSWORD_BYTES + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_NATS_PASSWORD_BYTES {
            return Err(NatsConnectError::PasswordTooLong(path.clone()));
        }
        let password = String::from_utf8(bytes)
            .map_err(|_| read_error(std::io::Error::other("the password is not UTF-8")))?;
        let password = password.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(NatsConnectError::EmptyPassword(path.clone()));
        }
        Ok(Some(NatsCredentials {
            user: user.clone(),
            password: crate::auth::Secret(password.to_owned()),
        }))
    }
}

/// The longest duration any setting accepts (a year): a bound on input, far above any sane
/// timeout or interval, and small enough that adding it to an `Instant` cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration with a unit: `250ms`, `5s`, `2m`, `1h` or `7d` (a whole number, then the unit;
/// surrounding spaces are ignored). A bare number is refused: see [`millis_or_duration`] and
/// [`seconds_or_duration`] for settings where a bare number has a legacy meaning.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_with(text, None)
}

/// A duration setting whose bare numbers are milliseconds (`3000` = `3000ms` = `3s`).
pub fn millis_or_duration(text: &str) -> Result<Duration, String> {
    parse_with(text, Some(Unit::Millis))
}

/// A duration setting whose bare numbers are seconds (`15` = `15s`), as its `_SECONDS` / `_SECS`
/// name says.
pub fn seconds_or_duration(text: &str) -> Result<Duration, String> {
    parse_with(text, Some(Unit::Seconds))
}

/// A clap value parser: `parse` (one of the functions above), then a range check.
pub fn duration_in(
    parse: fn(&str) -> Result<Duration, String>,
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = parse(text)?;
        if duration < min || duration > max {
            return Err(format!(
                "'{}' is out of range: use {} to {}",
                text.trim(),
                display_duration(min),
                display_duration(max)
            ));
        }
        Ok(duration)
    }
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Millis,
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl Unit {
    fn of(suffix: &str) -> Option<Unit> {
        match suffix {
            "ms" => Some(Unit::Millis),
            "s" => Some(Unit::Seconds),
            "m" => Some(Unit::Minutes),
            "h" => Some(Unit::Hours),
            "d" => Some(Unit::Days),
            _ => None,
        }
    }

    fn millis(self) -> u64 {
        match self {
            Unit::Millis => 1,
            Unit::Seconds => 1_000,
            Unit::Minutes => 60_000,
            Unit::Hours => 3_600_000,
            Unit::Days => 86_400_000,
        }
    }
}

fn parse_with(text: &str, bare: Option<Unit>) -> Result<Duration, String> {
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = trimmed.split_at(digits);
    let expected = match bare {
        None => "a duration such as 250ms, 5s, 2m, 1h or 7d",
        Some(Unit::Millis) => {
            "a duration such as 250ms, 5s, 2m, 1h or 7d, or a number of milliseconds"
        }
        Some(_) => "a duration such as 250ms, 5s, 2m, 1h or 7d, or a number of seconds",
    };
    let unit = if suffix.is_empty() { bare } else { Unit::of(suffix) };
    let (Some(unit), false) = (unit, number.is_empty()) else {
        return Err(format!("'{trimmed}' is not {expected}"));
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit.millis()))
        .map(Duration::from_millis)
        .filter(|duration| *duration <= MAX_DURATION)
        .ok_or_else(|| {
            format!("'{trimmed}' is too long (at most {})", display_duration(MAX_DURATION))
        })
}

/// `d` in the largest unit that writes it exactly (`90s`, `2m`, `1500ms`).
pub fn display_duration(d: Duration) -> String {
    let millis = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis != 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// This process's identity in logs, status frames, task results and leases: the host name (in
/// Kubernetes, the pod name) and the process id, `<host>-<pid>`.
pub fn instance_id() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// `$HOSTNAME`, else the kernel's host name, else `courier`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "courier".to_owned())
}

/// Connects to NATS without waiting for the server: the client keeps retrying in the background
/// (initial connect included), so a service starts, and reports not-ready, while NATS is down.
/// With credentials it logs in as their user and takes its replies under `_INBOX.<user>.`;
/// without, under `_INBOX.<client_name>.` (the component's usual user), so a reply subject says
/// which component asked either way (the api answers membership questions only to
/// `_INBOX.courier-broadcaster.`).
pub async fn connect_nats(
    url: &str,
    auth: &NatsAuthArgs,
    client_name: &str,
) -> Result<async_nats::Client, NatsConnectError> {
    let mut options = async_nats::ConnectOptions::new();
    options = match auth.credentials()? {
        Some(credentials) => options
            .custom_inbox_prefix(credentials.inbox_prefix())
            .user_and_password(credentials.user, credentials.password.0),
        None => options.custom_inbox_prefix(format!("_INBOX.{client_name}")),
    };
    Ok(options
        .name(client_name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            // 50 ms, 100 ms, … capped at 2 s: fast recovery after a NATS restart.
            Duration::from_millis((50u64 << attempts.min(6)).min(2_000))
        })
        .connect(url)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn auth(user: &str, path: &std::path::Path) -> NatsAuthArgs {
        NatsAuthArgs { nats_user: Some(user.into()), nats_password_file: Some(path.into()) }
    }

    #[test]
    fn credentials_come_from_the_password_file_and_never_show_in_debug() {
        let dir = std::env::temp_dir().join(format!("courier-nats-auth-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cret-Pass\n").unwrap();

        assert!(NatsAuthArgs::default().credentials().unwrap().is_none(), "no user: anonymous");
        let credentials = auth("courier-worker", &file).credentials().unwrap().unwrap();
        assert_eq!(credentials.password.0, "s3cret-Pass", "the trailing newline is dropped");
        assert_eq!(credentials.inbox_prefix(), "_INBOX.courier-worker");
        assert!(!format!("{credentials:?}").contains("s3cret"), "{credentials:?}");

        for bad in ["", "a.b", "a b", "a*", ">", &"u".repeat(MAX_NATS_USER_LEN + 1)] {
            assert!(
                matches!(auth(bad, &file).credentials(), Err(NatsConnectError::InvalidUser(_))),
                "{bad:?}"
            );
        }
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            auth("courier-api", &file).credentials(),
            Err(NatsConnectError::EmptyPassword(_))
        ));
        std::fs::write(&file, "x".repeat(MAX_NATS_PASSWORD_BYTES as usize + 1)).unwrap();
        assert!(matches!(
            auth("courier-api", &file).credentials(),
            Err(NatsConnectError::PasswordTooLong(_))
        ));
        let missing = auth("courier-api", &dir.join("absent")).credentials().unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn user_and_password_file_go_together_and_help_hides_the_url() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            nats: NatsArgs,
        }
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["x", "--nats-user", "courier-api"]).is_err());
        assert!(Cli::try_parse_from(["x", "--nats-password-file", "/p"]).is_err());
        let cli =
            Cli::try_parse_from(["x", "--nats-user", "courier-api", "--nats-password-file", "/p"])
                .unwrap();
        assert_eq!(cli.nats.auth.nats_user.as_deref(), Some("courier-api"));
        // A URL may carry credentials (nats://user:pass@host): help never echoes its value.
        let command = Cli::command();
        let url = command.get_arguments().find(|a| a.get_id() == "nats_url").unwrap();
        assert!(url.is_hide_env_values_set());
    }

    #[test]
    fn every_unit_parses_and_a_bare_number_only_where_it_has_a_meaning() {
        for (text, expected) in [
            ("250ms", MS(250)),
            ("5s", MS(5_000)),
            ("2m", MS(120_000)),
            ("1h", MS(3_600_000)),
            ("7d", MS(604_800_000)),
            ("0s", MS(0)),
            (" 3000ms ", MS(3_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
            assert_eq!(millis_or_duration(text), Ok(expected), "{text}");
            assert_eq!(seconds_or_duration(text), Ok(expected), "{text}");
        }
        assert!(parse_duration("3000").unwrap_err().contains("250ms, 5s, 2m, 1h or 7d"));
        assert_eq!(millis_or_duration("3000"), Ok(MS(3_000)));
        assert_eq!(millis_or_duration("0"), Ok(MS(0)));
        assert_eq!(seconds_or_duration("15"), Ok(MS(15_000)));
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for text in ["", "ms", "s", "-5s", "1.5s", "5 s", "5sec", "5D", "5S", "+5s", "5ms5", "0x10"]
        {
            for parse in [parse_duration, millis_or_duration, seconds_or_duration] {
                let err = parse(text).expect_err(text);
                assert!(err.contains("such as 250ms, 5s, 2m, 1h or 7d"), "{text}: {err}");
            }
        }
        assert!(millis_or_duration("5x").unwrap_err().contains("number of milliseconds"));
        assert!(seconds_or_duration("5x").unwrap_err().contains("number of seconds"));
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        for text in ["8761h", "99999999999999999999ms", "18446744073709551615h"] {
            assert!(parse_duration(text).unwrap_err().contains("too long"), "{text}");
        }
        let lease = duration_in(seconds_or_duration, MS(3_000), MS(300_000));
        assert_eq!(lease("15"), Ok(MS(15_000)));
        assert_eq!(lease("3000ms"), Ok(MS(3_000)));
        assert_eq!(lease("5m"), Ok(MS(300_000)));
        assert_eq!(lease("2s"), Err("'2s' is out of range: use 3s to 5m".to_owned()));
        assert!(lease("301").unwrap_err().contains("out of range"));
        assert!(lease("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn durations_display_in_their_largest_exact_unit() {
        let shown: Vec<String> = [0, 250, 1_500, 3_000, 90_000, 120_000, 7_200_000]
            .map(|ms| display_duration(MS(ms)))
            .to_vec();
        assert_eq!(shown, ["0ms", "250ms", "1500ms", "3s", "90s", "2m", "2h"]);
    }

    #[test]
    fn the_instance_id_is_the_host_name_and_the_pid() {
        let id = instance_id();
        let (host, pid) = id.rsplit_once('-').expect("<host>-<pid>");
        assert!(!host.is_empty(), "{id}");
        assert_eq!(pid, std::process::id().to_string());
    }
}
