//! Writes the CRD YAML generated from the Rust types. Without arguments it writes into the
//! chart's `charts/courier/crds/` in this repository; `crdgen DIR` writes into `DIR`;
//! `crdgen -` prints one multi-document YAML stream to stdout.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let files = courier_operator::crd::crd_files();
    let dir = match std::env::args_os().nth(1) {
        Some(arg) if arg == "-" => {
            for (_, yaml) in files {
                print!("---\n{yaml}");
            }
            return ExitCode::SUCCESS;
        }
        Some(arg) => PathBuf::from(arg),
        None => courier_operator::crd::chart_crd_dir(),
    };
    if let Err(err) = std::fs::create_dir_all(&dir) {
        eprintln!("crdgen: creating {}: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in files {
        let path = dir.join(name);
        if let Err(err) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: writing {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
