//! What a `Courier` may ask of the operator. The operator runs with the right to create pods
//! (through Deployments) in any namespace, and those pods mount the Secrets the Courier names;
//! without limits, anyone allowed to create a Courier could run any image with a namespace's
//! Secrets. So a Courier must name an image from an allowed repository, may not use
//! `env[].valueFrom` unless the operator allows it, and must name exactly one JWT key source.
//! The operator applies nothing for a Courier that breaks a rule; its status says which.

use clap::Args;

use crate::crd::Courier;

/// The chart's own image repository: the allow-list unless configured otherwise.
pub const DEFAULT_ALLOWED_IMAGES: &str = "ghcr.io/courier-dev/courier";

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Image repositories a Courier may run, comma separated: a repository
    /// (`ghcr.io/courier-dev/courier`, matched exactly), a prefix ending in `/`
    /// (`registry.example.com/courier/`, anything below it) or `*` (any image).
    #[arg(
        long = "allowed-images",
        env = "COURIER_OPERATOR_ALLOWED_IMAGES",
        value_delimiter = ',',
        default_value = DEFAULT_ALLOWED_IMAGES
    )]
    pub allowed_images: Vec<String>,
    /// Let a Courier set `env[].valueFrom` on its components (a `secretKeyRef` there would put
    /// any Secret of the namespace into the pod).
    #[arg(long = "allow-env-value-from", env = "COURIER_OPERATOR_ALLOW_ENV_VALUE_FROM")]
    pub allow_env_value_from: bool,
}

/// One entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Any,
    Repository(String),
    Under(String),
}

/// The rules, checked before anything of a Courier is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    allowed: Vec<Allowed>,
    allow_env_value_from: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "COURIER_OPERATOR_ALLOWED_IMAGES entry {0:?} is neither a repository, a prefix ending in '/', nor '*'"
)]
pub struct BadAllowListEntry(pub String);

impl Policy {
    pub fn from_args(args: &PolicyArgs) -> Result<Self, BadAllowListEntry> {
        let mut allowed = Vec::new();
        for entry in args.allowed_images.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            allowed.push(match entry {
                "*" => Allowed::Any,
                prefix
                    if prefix.ends_with('/') && valid_repository(&prefix[..prefix.len() - 1]) =>
                {
                    Allowed::Under(prefix.to_owned())
                }
                repository if valid_repository(repository) => {
                    Allowed::Repository(repository.to_owned())
                }
                bad => return Err(BadAllowListEntry(bad.chars().take(200).collect())),
            });
        }
        Ok(Policy { allowed, allow_env_value_from: args.allow_env_value_from })
    }

    /// Allows the given repositories (tests).
    pub fn allowing(repositories: &[&str]) -> Self {
        Policy {
            allowed: repositories.iter().map(|r| Allowed::Repository((*r).to_owned())).collect(),
            allow_env_value_from: false,
        }
    }

    pub fn with_env_value_from(mut self, allow: bool) -> Self {
        self.allow_env_value_from = allow;
        self
    }

    /// Every rule `courier` breaks, as sentences naming the field; empty when it may run.
    pub fn violations(&self, courier: &Courier) -> Vec<String> {
        let spec = &courier.spec;
        let mut found = Vec::new();
        let image = &spec.image;
        if !valid_repository(&image.repository) {
            found.push(format!(
                "spec.image.repository {:?} is not an image repository",
                shorten(&image.repository)
            ));
        } else if !self.allows(&image.repository) {
            found.push(format!(
                "spec.image.repository {:?} is not allowed by this operator (COURIER_OPERATOR_ALLOWED_IMAGES: {})",
                image.repository,
                self.describe_allowed()
            ));
        }
        if !valid_tag(&image.tag) {
            found.push(format!(
                "spec.image.tag {:?} is not an image tag (letters, digits, '_', '.', '-'; at most 128)",
                shorten(&image.tag)
            ));
        }
        if !self.allow_env_value_from {
            let components = [
                ("api", &spec.api),
                ("broadcaster", &spec.broadcaster),
                ("worker", &spec.worker.component),
            ];
            for (name, component) in components {
                for var in component.env.iter().filter(|v| v.value_from.is_some()) {
                    found.push(format!(
                        "spec.{name}.env {:?} uses valueFrom, which this operator does not allow (COURIER_OPERATOR_ALLOW_ENV_VALUE_FROM)",
                        shorten(&var.name)
                    ));
                }
            }
        }
        match (&spec.jwt_secret_ref, &spec.jwt_key_pair) {
            (Some(_), Some(_)) => found.push(
                "spec.jwtSecretRef and spec.jwtKeyPair are both set: choose HS256 or RS256".into(),
            ),
            (None, None) => found.push(
                "neither spec.jwtSecretRef (HS256) nor spec.jwtKeyPair (RS256) is set".into(),
            ),
            _ => {}
        }
        found
    }

    fn allows(&self, repository: &str) -> bool {
        self.allowed.iter().any(|allowed| match allowed {
            Allowed::Any => true,
            Allowed::Repository(r) => r == repository,
            Allowed::Under(prefix) => repository.starts_with(prefix.as_str()),
        })
    }

    fn describe_allowed(&self) -> String {
        if self.allowed.is_empty() {
            return "none".into();
        }
        self.allowed
            .iter()
            .map(|a| match a {
                Allowed::Any => "*".to_owned(),
                Allowed::Repository(r) | Allowed::Under(r) => r.clone(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(100).collect()
}

/// `[host[:port]/]path/of/components`, each component lowercase letters and digits joined by
/// `.`, `_`, `__` or dashes (the OCI reference grammar); no tag or digest.
fn valid_repository(repository: &str) -> bool {
    if repository.is_empty() || repository.len() > 255 {
        return false;
    }
    let mut parts = repository.split('/').collect::<Vec<_>>();
    if parts.len() > 1 && looks_like_host(parts[0]) {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, ""));
        let host_ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !host_ok || !(port.is_empty() || port.bytes().all(|b| b.is_ascii_digit())) {
            return false;
        }
        if host.ends_with(':') {
            return false;
        }
    }
    parts.iter().all(|component| valid_component(component))
}

/// A first component with a `.` or `:`, or `localhost`, is a registry host (as Docker reads it).
fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or one or more `-`, always followed by a letter or digit.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => i += if bytes.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::fixtures;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        policy: PolicyArgs,
    }

    fn policy(args: &[&str]) -> Policy {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        Policy::from_args(&cli.policy).unwrap()
    }

    fn with_image(repository: &str, tag: &str) -> Courier {
        let mut courier = fixtures::courier();
        courier.spec.image.repository = repository.into();
        courier.spec.image.tag = tag.into();
        courier
    }

    #[test]
    fn by_default_only_the_charts_repository_runs_and_value_from_is_refused() {
        let default = policy(&[]);
        assert!(default.violations(&with_image(DEFAULT_ALLOWED_IMAGES, "0.1.0")).is_empty());
        let other = default.violations(&with_image("ghcr.io/example/courier", "1.2.3"));
        assert_eq!(other.len(), 1, "{other:?}");
        assert!(other[0].contains("spec.image.repository"), "{}", other[0]);
        assert!(other[0].contains(DEFAULT_ALLOWED_IMAGES), "names what is allowed: {}", other[0]);

        let mut courier = with_image(DEFAULT_ALLOWED_IMAGES, "0.1.0");
        courier.spec.worker.component.env = serde_json::from_value(json!([
            {"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": "bank", "key": "token"}}},
            {"name": "COURIER_LOG", "value": "debug"}
        ]))
        .unwrap();
        let found = default.violations(&courier);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("spec.worker.env \"STOLEN\" uses valueFrom"), "{}", found[0]);
        assert!(default.clone().with_env_value_from(true).violations(&courier).is_empty());
        assert!(policy(&["--allow-env-value-from"]).violations(&courier).is_empty());
    }

    #[test]
    fn allow_list_entries_match_a_repository_exactly_or_everything_under_a_prefix() {
        let p = policy(&["--allowed-images", "ghcr.io/acme/courier, registry.local:5000/team/"]);
        for ok in [
            "ghcr.io/acme/courier",
            "registry.local:5000/team/courier",
            "registry.local:5000/team/a/b",
        ] {
            assert!(p.violations(&with_image(ok, "1.0")).is_empty(), "{ok}");
        }
        for refused in [
            "ghcr.io/acme/courier-evil",
            "ghcr.io/acme/courierx",
            "ghcr.io/acme",
            "registry.local:5000/teamx/courier",
            "registry.local:5001/team/courier",
            "evil.io/ghcr.io/acme/courier",
        ] {
            assert_eq!(p.violations(&with_image(refused, "1.0")).len(), 1, "{refused}");
        }
        assert!(
            policy(&["--allowed-images", "*"])
                .violations(&with_image("anything/at-all", "x"))
                .is_empty()
        );
        let none = policy(&["--allowed-images", ""]);
        assert!(none.violations(&with_image(DEFAULT_ALLOWED_IMAGES, "1"))[0].contains("none"));
        for bad in ["ghcr.io/acme/courier:1.0", "Upper/Case", "a//b", "-x", "ghcr.io/a@sha256:ab"] {
            let cli = Cli::try_parse_from(["x", &format!("--allowed-images={bad}")]).unwrap();
            assert_eq!(Policy::from_args(&cli.policy), Err(BadAllowListEntry(bad.into())), "{bad}");
        }
    }

    #[test]
    fn malformed_repositories_and_tags_cannot_slip_past_the_list() {
        let p = policy(&["--allowed-images", "ghcr.io/acme/"]);
        for (repository, tag) in [
            ("ghcr.io/acme/courier@sha256:abc", "1"),
            ("ghcr.io/acme/../evil", "1"),
            ("ghcr.io/acme/courier:evil", "1"),
            ("ghcr.io/acme/Courier", "1"),
            ("ghcr.io/acme/courier", "1@sha256:abc"),
            ("ghcr.io/acme/courier", "x/evil.io/y"),
            ("ghcr.io/acme/courier", ""),
            ("ghcr.io/acme/courier", &"t".repeat(129)),
        ] {
            let found = p.violations(&with_image(repository, tag));
            assert_eq!(found.len(), 1, "{repository}:{tag} → {found:?}");
        }
        assert!(p.violations(&with_image("ghcr.io/acme/my_app__x-y.z", "v1.2.3-rc_1")).is_empty());
    }

    #[test]
    fn exactly_one_jwt_key_source() {
        let p = Policy::allowing(&["ghcr.io/example/courier"]);
        let mut courier = fixtures::courier();
        assert!(p.violations(&courier).is_empty(), "the fixture uses HS256");
        courier.spec.jwt_key_pair = Some(
            serde_json::from_value(json!({
                "privateKeySecretRef": {"name": "jwt", "key": "private.pem"},
                "publicKeySecretRef": {"name": "jwt", "key": "public.pem"}
            }))
            .unwrap(),
        );
        assert!(p.violations(&courier)[0].contains("both set"));
        courier.spec.jwt_secret_ref = None;
        assert!(p.violations(&courier).is_empty());
        courier.spec.jwt_key_pair = None;
        assert!(p.violations(&courier)[0].contains("neither"));
    }
}
