//! Writes the CRD YAML generated from the Rust types: into the directory given as the first
//! argument (the chart's `charts/courier/crds`), or to stdout when there is none.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let files = courier_operator::crd::crd_files();
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        for (_, yaml) in files {
            print!("---\n{yaml}");
        }
        return ExitCode::SUCCESS;
    };
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
