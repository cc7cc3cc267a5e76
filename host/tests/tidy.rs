//! The structural invariants ARCHITECTURE.md states, checked on the source text (in the manner
//! of rust-analyzer's tidy test): layers import only downwards, the wire stays in csi/, the OS
//! stays in node/, `anyhow` stays at the binary's edges, and the code map names every module.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under host/src, as (path relative to src, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = vec![];
    walk(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let rel = p.strip_prefix(src()).unwrap().display().to_string();
            (rel, text)
        })
        .collect()
}

/// The source without comments, so prose may name what code must not use.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `code` uses `token` (an identifier-led token must start at a word boundary, so
/// `fs::` does not match `mkfs::`).
fn uses(code: &str, token: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(token).any(|(i, _)| {
        !token.starts_with(ident) || !code[..i].chars().next_back().is_some_and(ident)
    })
}

/// The top-level module a file belongs to (`csi/node.rs` → `csi`, `serve.rs` → `serve`).
fn top(rel: &str) -> &str {
    rel.split('/').next().unwrap().trim_end_matches(".rs")
}

/// The layers, from the wire down; a module may import its own layer or any below it.
const LAYERS: &[&[&str]] = &[
    &["main", "cli", "serve", "lib"],
    &[
        "csi",
        "client",
        "authority",
        "proto",
        "author",
        "audit",
        "scrape",
    ],
    &["lifecycle"],
    &["fencing", "cleanup", "node"],
    &["runtime", "kube"],
    &["volume", "state", "metrics"],
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of the tidy test"))
}

/// The top-level modules a file's code names through `crate::`.
fn imports(text: &str) -> Vec<String> {
    let code = code(text);
    let mut found = vec![];
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

#[test]
fn layers_import_only_downwards() {
    let mut violations = vec![];
    for (rel, text) in sources() {
        let from = top(&rel);
        for to in imports(&text) {
            if layer(&to) < layer(from) {
                violations.push(format!("{rel} imports crate::{to}, a layer above it"));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn node_volume_fencing_and_cleanup_never_import_the_runtime() {
    for (rel, text) in sources() {
        if ["node", "volume", "fencing", "cleanup"].contains(&top(&rel)) {
            let code = code(&text);
            assert!(
                !uses(&code, "crate::runtime") && !uses(&code, "wasmtime"),
                "{rel} reaches the backend runtime"
            );
        }
    }
}

#[test]
fn anyhow_lives_only_at_the_binarys_edges() {
    for (rel, text) in sources() {
        if !(rel == "main.rs" || rel.starts_with("cli/")) {
            assert!(!uses(&code(&text), "anyhow"), "{rel} uses anyhow");
        }
    }
}

#[test]
fn grpc_status_codes_are_made_only_in_csi_error() {
    let transport = ["csi", "client", "authority", "serve", "cli", "lib"];
    for (rel, text) in sources() {
        let code = code(&text);
        if !transport.contains(&top(&rel)) {
            assert!(
                !uses(&code, "tonic"),
                "{rel} uses tonic: the wire is csi/'s"
            );
        }
        if rel.starts_with("csi/") && rel != "csi/error.rs" {
            for made in ["Code::", "Status::"] {
                assert!(!uses(&code, made), "{rel} makes a gRPC status ({made})");
            }
        }
    }
}

#[test]
fn the_wire_and_the_lifecycle_never_touch_the_filesystem() {
    let forbidden = [
        "std::fs",
        "fs::",
        "nix::",
        "libc::",
        ".exists()",
        "canonicalize",
        "File::",
        "OpenOptions",
        "std::process",
        "read_dir",
        "symlink_metadata",
    ];
    for (rel, text) in sources() {
        if ["csi", "lifecycle"].contains(&top(&rel)) {
            let code = code(&text);
            for f in forbidden {
                assert!(
                    !uses(&code, f),
                    "{rel} touches the node ({f}): that is node/'s work"
                );
            }
        }
    }
}

#[test]
fn the_code_map_names_every_module() {
    let map =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .unwrap();
    let mut missing = vec![];
    for (rel, _) in sources() {
        // Folders by their path (`host/src/node/`), top-level files by their name.
        let name = match rel.rsplit_once('/') {
            Some((dir, _)) => format!("host/src/{dir}/"),
            None if rel == "lib.rs" => continue,
            None => format!("host/src/{rel}"),
        };
        if !map.contains(&name) && !missing.contains(&name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {}",
        missing.join(", ")
    );
}
