//! On-disk cache of precompiled components, so a restart loads a backend in milliseconds.
//!
//! An artifact is keyed by the SHA-256 of the component bytes, the wasmtime version and the
//! engine's compatibility hash: a changed `.wasm`, a new wasmtime or a different engine
//! configuration each lead to a fresh compile. Invariant: only this module writes the cache
//! directory (mode 0700), and it deserializes nothing it did not write itself.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime version this host was built with (read from Cargo.lock by build.rs).
const WASMTIME_VERSION: &str = env!("MODCSI_WASMTIME_VERSION");

/// Whether a component was compiled now or loaded from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Cached,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use component cache directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write precompiled component {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("component does not compile: {0:#}")]
    Compile(wasmtime::Error),
}

pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Opens (creating it if needed) the cache in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let dir_err = |source| CacheError::Dir {
            path: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The artifact path for these component bytes under this engine.
    pub fn artifact_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut engine_hash = DefaultHasher::new();
        WASMTIME_VERSION.hash(&mut engine_hash);
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let content = hex::encode(Sha256::digest(wasm));
        self.dir.join(format!(
            "{content}-wasmtime{WASMTIME_VERSION}-{:016x}.cwasm",
            engine_hash.finish()
        ))
    }

    /// Loads the component for `wasm`, compiling and storing it on a miss. An artifact that no
    /// longer deserializes (truncated, foreign) is replaced.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, Origin), CacheError> {
        let path = self.artifact_path(engine, wasm);
        if path.is_file() {
            // SAFETY: the file is in our private cache directory and was written by `store`
            // from `Engine::precompile_component`; wasmtime still checks version and config.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(err) => {
                    tracing::warn!(path = %path.display(), "discarding unusable precompiled component: {err:#}")
                }
            }
        }
        let artifact = engine
            .precompile_component(wasm)
            .map_err(CacheError::Compile)?;
        self.store(&path, &artifact)?;
        // SAFETY: the bytes come from `precompile_component` on this very engine.
        let component =
            unsafe { Component::deserialize(engine, &artifact) }.map_err(CacheError::Compile)?;
        Ok((component, Origin::Compiled))
    }

    /// Writes atomically: a crash leaves either the old state or the whole new artifact.
    fn store(&self, path: &Path, artifact: &[u8]) -> Result<(), CacheError> {
        let write_err = |source| CacheError::Write {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = fs::File::create(&tmp).map_err(write_err)?;
        file.write_all(artifact)
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        fs::rename(&tmp, path).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    const EMPTY: &str = "(component)";
    const WITH_MODULE: &str = "(component (core module (func (export \"f\"))))";

    #[test]
    fn second_load_comes_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let engine = engine();
        let wasm = wat::parse_str(EMPTY).unwrap();
        assert_eq!(cache.load(&engine, &wasm).unwrap().1, Origin::Compiled);
        assert_eq!(cache.load(&engine, &wasm).unwrap().1, Origin::Cached);
    }

    #[test]
    fn a_changed_component_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let engine = engine();
        let first = wat::parse_str(EMPTY).unwrap();
        let changed = wat::parse_str(WITH_MODULE).unwrap();
        cache.load(&engine, &first).unwrap();
        assert_ne!(
            cache.artifact_path(&engine, &first),
            cache.artifact_path(&engine, &changed)
        );
        assert_eq!(cache.load(&engine, &changed).unwrap().1, Origin::Compiled);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_corrupt_artifact_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let engine = engine();
        let wasm = wat::parse_str(WITH_MODULE).unwrap();
        fs::write(cache.artifact_path(&engine, &wasm), b"not an artifact").unwrap();
        assert_eq!(cache.load(&engine, &wasm).unwrap().1, Origin::Compiled);
        assert_eq!(cache.load(&engine, &wasm).unwrap().1, Origin::Cached);
    }

    #[test]
    fn key_includes_engine_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let wasm = wat::parse_str(EMPTY).unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        assert_ne!(
            cache.artifact_path(&engine(), &wasm),
            cache.artifact_path(&other, &wasm)
        );
    }
}
