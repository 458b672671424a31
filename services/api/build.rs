//! Embeds the web app's production bundle (`services/web/dist`, written by `vite build`) into
//! courier-api: generates `$OUT_DIR/web_bundle.rs`, a table of `(path, bytes)` for every file of
//! the bundle, or an empty table when the app is not built (the api then serves a page at `/`
//! saying how to build it). `COURIER_WEB_DIST` points at another bundle directory.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => collect(&entry.path(), &format!("{name}/"), out),
            // Dotfiles (the `./dev` build stamp) are not part of the app.
            Ok(kind)
                if kind.is_file()
                    && !name.rsplit('/').next().is_some_and(|n| n.starts_with('.')) =>
            {
                out.push(name)
            }
            _ => {}
        }
    }
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dist = env::var_os("COURIER_WEB_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../web/dist"));
    println!("cargo:rerun-if-env-changed=COURIER_WEB_DIST");
    // Cargo scans a watched directory for the newest mtime of anything in it. A watched path
    // that does not exist would rerun this script (and recompile courier-api) on every cargo
    // invocation, so a missing bundle is noticed through its parent instead: creating `dist`
    // changes the parent. A present bundle is watched itself (its deletion is noticed too).
    if dist.is_dir() {
        println!("cargo:rerun-if-changed={}", dist.display());
    } else if let Some(parent) = dist.parent().filter(|parent| parent.is_dir()) {
        println!("cargo:rerun-if-changed={}", parent.display());
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, "", &mut files);
    }
    files.sort();
    let mut table = String::from("&[\n");
    for file in &files {
        let path = dist.join(file).canonicalize().expect("a bundle file");
        table.push_str(&format!("    ({file:?}, include_bytes!({path:?})),\n"));
    }
    table.push_str("]\n");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("web_bundle.rs");
    fs::write(out, table).expect("writing web_bundle.rs");
}
