//! `--help` of every binary, run with secrets in its environment: it names each setting's
//! variable but never prints the value of one that may carry a secret (a MongoDB URI with its
//! password, a NATS URL with credentials, a JWT secret, an access token).

use std::process::Command;

use courier_tests::process::courier_binary;

/// The secrets, as a deployment would put them in the environment.
const SECRETS: &[(&str, &str)] = &[
    ("COURIER_MONGODB_URI", "mongodb://courier:hunter2-mongo@db.example:27017/?replicaSet=rs0"),
    ("COURIER_NATS_URL", "nats://courier:hunter2-nats@nats.example:4222"),
    ("COURIER_JWT_SECRET", "hunter2-jwt-secret-0123456789abcdef0123456789"),
    ("COURIER_TOKEN", "hunter2-access-token"),
];

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "courier-api",
            &["--help"],
            &["COURIER_MONGODB_URI", "COURIER_NATS_URL", "COURIER_JWT_SECRET"],
        ),
        ("courier-worker", &["--help"], &["COURIER_MONGODB_URI", "COURIER_NATS_URL"]),
        ("courier-broadcaster", &["--help"], &["COURIER_NATS_URL", "COURIER_JWT_SECRET"]),
        ("courier-operator", &["--help"], &[]),
        ("courier", &["tail", "--help"], &["COURIER_TOKEN"]),
        ("courier", &["bench", "fanout", "--help"], &["COURIER_NATS_URL"]),
        ("courier", &["bench", "api", "--help"], &["COURIER_MONGODB_URI", "COURIER_NATS_URL"]),
    ];
    for (binary, args, named) in cases {
        let output = Command::new(courier_binary(binary))
            .args(*args)
            .envs(SECRETS.iter().copied())
            .output()
            .unwrap_or_else(|err| panic!("running {binary}: {err}"));
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{binary} {args:?}: {help}");
        assert!(!help.contains("hunter2"), "{binary} {args:?} printed a secret:\n{help}");
        for variable in *named {
            assert!(help.contains(variable), "{binary} {args:?} does not name {variable}");
        }
    }
}
