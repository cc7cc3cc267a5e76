//! `modcsi backend inspect`: what a component is, from the component itself: its contract
//! version, the optional interfaces it exports, the host capabilities it imports, what its
//! `info` declares, its size and how long it takes to compile.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::runtime::{Backend, LoadError, Optional, RuntimeOptions};

#[derive(Debug, Serialize)]
pub struct Parameter {
    pub name: String,
    pub description: String,
    pub required: bool,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub component: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Compiling the component to native code (done once: the host caches it).
    pub compile_ms: f64,
    pub contract: String,
    pub name: String,
    pub version: String,
    /// The optional interfaces it exports.
    pub exports: Vec<&'static str>,
    /// The host capabilities it imports (`ssh`, `http`, `store`, …): what its configuration
    /// has to grant, the host-owned `ssh` and `http` sections for those two.
    pub capabilities: Vec<String>,
    /// Every import and every export, by the component's own names.
    pub imports: Vec<String>,
    pub interfaces_exported: Vec<String>,
    pub access_modes: Vec<&'static str>,
    pub volume_modes: Vec<&'static str>,
    pub content_sources: Vec<&'static str>,
    pub topology: bool,
    pub parameters: Vec<Parameter>,
}

/// Loads the component at `path` (compiled afresh, into `scratch`) and describes it.
pub async fn inspect(path: &Path, scratch: &Path) -> Result<Inspection, LoadError> {
    let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let started = Instant::now();
    let backend = Backend::load(
        path,
        RuntimeOptions {
            cache_dir: scratch.to_owned(),
            memory_limit: 128 << 20,
            call_timeout: Duration::from_secs(10),
            max_concurrent_calls: 1,
            config: Arc::default(),
            store: None,
            node_addresses: Arc::from([]),
        },
    )
    .await?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let (imports, interfaces_exported) = backend.interfaces();
    let info = backend.info();
    let flags = |pairs: &[(bool, &'static str)]| {
        pairs
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect()
    };
    Ok(Inspection {
        component: path.display().to_string(),
        size_bytes: wasm.len() as u64,
        sha256: hex::encode(Sha256::digest(&wasm)),
        compile_ms,
        contract: backend.wit_version().to_owned(),
        name: info.name.clone(),
        version: info.version.clone(),
        exports: Optional::ALL
            .into_iter()
            .filter(|i| backend.offers(*i))
            .map(Optional::name)
            .collect(),
        capabilities: capabilities(&imports),
        imports,
        interfaces_exported,
        access_modes: info.access_modes.iter().map(|m| m.csi_name()).collect(),
        volume_modes: flags(&[
            (info.volume_modes.filesystem, "filesystem"),
            (info.volume_modes.block, "block"),
        ]),
        content_sources: flags(&[
            (info.content_sources.snapshot, "snapshot"),
            (info.content_sources.volume, "volume"),
        ]),
        topology: info.topology,
        parameters: info
            .parameters
            .iter()
            .map(|p| Parameter {
                name: p.name.clone(),
                description: p.description.clone(),
                required: p.required,
            })
            .collect(),
    })
}

/// The host capabilities among a component's imports: the contract's own interfaces but its
/// types, and `http` for wasi:http's outgoing handler.
fn capabilities(imports: &[String]) -> Vec<String> {
    let mut found: Vec<String> = imports
        .iter()
        .filter_map(|name| {
            if name.starts_with("wasi:http/outgoing-handler") {
                return Some("http".to_owned());
            }
            let interface = name.strip_prefix("modcsi:backend/")?;
            let interface = interface.split('@').next().unwrap_or(interface);
            (interface != "types").then(|| interface.to_owned())
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

impl Inspection {
    /// The inspection for people.
    pub fn text(&self) -> String {
        let list = |items: &[&str]| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        let capabilities: Vec<&str> = self.capabilities.iter().map(String::as_str).collect();
        let mut out = format!(
            "component        {}\nsize             {} bytes, sha256 {}\ncompiles in      {:.0} ms\n\
             contract         modcsi:backend@{}\nbackend          {} {}\n\
             exports          identity, controller{}\ncapabilities     {}\n\
             access modes     {}\nvolume modes     {}\ncontent sources  {}\ntopology         {}\n",
            self.component,
            self.size_bytes,
            self.sha256,
            self.compile_ms,
            self.contract,
            self.name,
            self.version,
            self.exports
                .iter()
                .map(|e| format!(", {e}"))
                .collect::<String>(),
            list(&capabilities),
            list(&self.access_modes),
            list(&self.volume_modes),
            list(&self.content_sources),
            if self.topology { "yes" } else { "no" },
        );
        if self.parameters.is_empty() {
            out += "parameters       none\n";
        }
        for p in &self.parameters {
            out += &format!(
                "parameter        {}{}: {}\n",
                p.name,
                if p.required { " (required)" } else { "" },
                p.description
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn capabilities_are_the_contracts_imports_and_http() {
        let imports = [
            "modcsi:backend/types@0.2.2",
            "modcsi:backend/ssh@0.2.2",
            "modcsi:backend/log@0.2.2",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:http/types@0.2.6",
            "wasi:io/streams@0.2.6",
        ]
        .map(String::from);
        assert_eq!(super::capabilities(&imports), ["http", "log", "ssh"]);
    }
}
