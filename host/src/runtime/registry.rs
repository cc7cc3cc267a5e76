//! Backends delivered as OCI artifacts: `--backend oci://registry/repository:tag` or
//! `…@sha256:<digest>`. A reference is pulled with oci-client (the ORAS project's maintained
//! OCI distribution client) in the Wasm artifact layout of the CNCF TAG Runtime (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer; the older
//! `vnd.wasm.content.layer.v1+wasm` layer is read too), verified by digest — the manifest
//! against a pinned reference, the component against the manifest's layer digest — and kept
//! by digest under `<cache>/oci`. A pinned reference already pulled starts without the
//! registry. `modcsi backend push` writes the same layout.

use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest, WASM_LAYER_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

/// The scheme that marks a `--backend` value as an OCI reference.
pub const SCHEME: &str = "oci://";
/// The Wasm artifact layout's config and layer media types.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The largest component pulled.
const MAX_COMPONENT_BYTES: i64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{reference:?} is not an OCI reference like oci://registry.example.com/backends/rds:1.0: {reason}"
    )]
    Reference { reference: String, reason: String },
    #[error("{reference}: {source}")]
    Registry {
        reference: String,
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{reference} is not a WebAssembly component artifact: {reason}")]
    NotWasm { reference: String, reason: String },
    #[error(
        "{reference}: the component's digest is {actual}, the manifest says {expected}: refused"
    )]
    Digest {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: cache {path}: {source}")]
    Cache {
        reference: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A component pulled and verified, in the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub path: PathBuf,
    /// The manifest's digest: the reference to pin.
    pub manifest_digest: String,
    /// The component's own digest.
    pub digest: String,
}

pub struct Registry {
    client: Client,
    cache: PathBuf,
}

/// The reference in `value` when it is one (`oci://…`); `None` for a file path.
pub fn reference(value: &str) -> Option<&str> {
    value.strip_prefix(SCHEME)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// A client keeping pulled components under `cache_dir/oci`; the registries in
    /// `plain_http` (`host:port`) are spoken to over plain HTTP, every other over HTTPS.
    pub fn new(cache_dir: &Path, plain_http: Vec<String>) -> Self {
        // oci-client leaves the TLS provider to the process: the host's is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http),
            ..Default::default()
        });
        Self {
            client,
            cache: cache_dir.join("oci"),
        }
    }

    fn parse(value: &str) -> Result<Reference, RegistryError> {
        let bad = |reason: String| RegistryError::Reference {
            reference: value.to_owned(),
            reason,
        };
        let text =
            reference(value).ok_or_else(|| bad(format!("it does not start with {SCHEME}")))?;
        let parsed: Reference = text.parse().map_err(|e| bad(format!("{e}")))?;
        if !text.starts_with(parsed.registry()) {
            return Err(bad(
                "name the registry (a host, with its port if any)".into()
            ));
        }
        Ok(parsed)
    }

    fn registry_error(
        value: &str,
    ) -> impl FnOnce(oci_client::errors::OciDistributionError) -> RegistryError + '_ {
        move |source| RegistryError::Registry {
            reference: value.to_owned(),
            source,
        }
    }

    fn cache_error(value: &str, path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
        let (reference, path) = (value.to_owned(), path.to_owned());
        move |source| RegistryError::Cache {
            reference,
            path,
            source,
        }
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.cache
            .join(format!("{}.wasm", digest.replace(':', "-")))
    }

    fn manifest_path(&self, digest: &str) -> PathBuf {
        self.cache
            .join(format!("{}.manifest", digest.replace(':', "-")))
    }

    /// The cached component of `digest`, if it is there and still has that digest.
    fn cached(&self, digest: &str) -> Option<PathBuf> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).ok()?;
        (sha256(&bytes) == digest).then_some(path)
    }

    /// Pulls the component `value` names (`oci://…`), verified, into the cache.
    pub async fn pull(&self, value: &str) -> Result<Pulled, RegistryError> {
        let reference = Self::parse(value)?;
        // A pinned reference pulled before needs no registry.
        if let Some(pinned) = reference.digest()
            && let Ok(digest) = std::fs::read_to_string(self.manifest_path(pinned))
            && let Some(path) = self.cached(digest.trim())
        {
            return Ok(Pulled {
                path,
                manifest_digest: pinned.to_owned(),
                digest: digest.trim().to_owned(),
            });
        }
        let (raw, manifest_digest) = self
            .client
            .pull_manifest_raw(
                &reference,
                &RegistryAuth::Anonymous,
                &[OCI_IMAGE_MEDIA_TYPE],
            )
            .await
            .map_err(Self::registry_error(value))?;
        if let Some(pinned) = reference.digest()
            && sha256(&raw) != pinned
        {
            return Err(RegistryError::Digest {
                reference: value.to_owned(),
                expected: pinned.to_owned(),
                actual: sha256(&raw),
            });
        }
        let not_wasm = |reason: String| RegistryError::NotWasm {
            reference: value.to_owned(),
            reason,
        };
        let manifest: OciImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| not_wasm(format!("its manifest does not parse: {e}")))?;
        let [layer] = manifest.layers.as_slice() else {
            return Err(not_wasm(format!(
                "it has {} layers, not the one component",
                manifest.layers.len()
            )));
        };
        if ![LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE].contains(&layer.media_type.as_str()) {
            return Err(not_wasm(format!("its layer is {}", layer.media_type)));
        }
        if layer.size > MAX_COMPONENT_BYTES {
            return Err(not_wasm(format!(
                "its layer of {} bytes is over the {MAX_COMPONENT_BYTES} a component may have",
                layer.size
            )));
        }
        let path = match self.cached(&layer.digest) {
            Some(path) => path,
            None => {
                let mut bytes = Vec::new();
                self.client
                    .pull_blob(&reference, layer, &mut bytes)
                    .await
                    .map_err(Self::registry_error(value))?;
                let actual = sha256(&bytes);
                if actual != layer.digest {
                    return Err(RegistryError::Digest {
                        reference: value.to_owned(),
                        expected: layer.digest.clone(),
                        actual,
                    });
                }
                let path = self.blob_path(&layer.digest);
                write_atomically(&path, &bytes).map_err(Self::cache_error(value, &path))?;
                path
            }
        };
        let record = self.manifest_path(&manifest_digest);
        write_atomically(&record, layer.digest.as_bytes())
            .map_err(Self::cache_error(value, &record))?;
        Ok(Pulled {
            path,
            manifest_digest,
            digest: layer.digest.clone(),
        })
    }

    /// Pushes `wasm` to `value` (`oci://…:tag`) in the Wasm artifact layout, `interfaces`
    /// (imports, exports) in its config; answers the pinned reference
    /// (`oci://…@sha256:<manifest digest>`).
    pub async fn push(
        &self,
        value: &str,
        wasm: Vec<u8>,
        interfaces: (Vec<String>, Vec<String>),
    ) -> Result<String, RegistryError> {
        let reference = Self::parse(value)?;
        let digest = sha256(&wasm);
        let config = serde_json::json!({
            "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [digest],
            "component": { "imports": interfaces.0, "exports": interfaces.1 },
        });
        let layers = [ImageLayer::new(wasm, LAYER_MEDIA_TYPE.into(), None)];
        let config = Config::new(
            config.to_string().into_bytes(),
            CONFIG_MEDIA_TYPE.into(),
            None,
        );
        self.client
            .push(&reference, &layers, config, &RegistryAuth::Anonymous, None)
            .await
            .map_err(Self::registry_error(value))?;
        let manifest = self
            .client
            .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
            .await
            .map_err(Self::registry_error(value))?;
        Ok(format!(
            "{SCHEME}{}/{}@{manifest}",
            reference.registry(),
            reference.repository()
        ))
    }
}

/// Writes through a temporary file and a rename, in a directory only the host's user reads.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry() {
        assert_eq!(
            reference("oci://r.example/b/rds:1"),
            Some("r.example/b/rds:1")
        );
        assert_eq!(reference("/var/lib/rds.wasm"), None);
        let ok = Registry::parse("oci://127.0.0.1:5000/backends/nlc:0.1").unwrap();
        assert_eq!(ok.registry(), "127.0.0.1:5000");
        assert_eq!(ok.repository(), "backends/nlc");
        for bad in [
            "oci://",
            "oci://backends/nlc:0.1",
            "oci://r.example/UPPER:1",
            "r.example/b:1",
        ] {
            assert!(
                matches!(Registry::parse(bad), Err(RegistryError::Reference { .. })),
                "{bad}"
            );
        }
    }
}
