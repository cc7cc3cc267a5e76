//! On-disk cache of precompiled components, so a restart loads a backend in milliseconds.
//!
//! An artifact is keyed by the SHA-256 of the component bytes, the wasmtime version and the
//! engine's compatibility hash: a changed `.wasm`, a new wasmtime or a different engine
//! configuration each lead to a fresh compile. Invariant: only this module writes the cache
//! directory (owned by the running uid, mode 0700), and it deserializes nothing it did not
//! write itself: artifacts are opened without following symbolic links and must be regular
//! files owned by the running uid, writable by no one else. Artifacts of other wasmtime
//! versions or engine configurations are evicted, and at most [`MAX_ARTIFACTS`] are kept.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime version this host was built with (read from Cargo.lock by build.rs).
const WASMTIME_VERSION: &str = env!("MODCSI_WASMTIME_VERSION");

/// Artifacts kept for the current engine; older ones are evicted.
pub const MAX_ARTIFACTS: usize = 16;
const ARTIFACT_SUFFIX: &str = ".cwasm";

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
    #[error("component cache directory {path} {problem}; refusing to use it")]
    Unsafe { path: PathBuf, problem: String },
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
        let meta = fs::symlink_metadata(dir).map_err(dir_err)?;
        let unsafe_dir = |problem: String| CacheError::Unsafe {
            path: dir.to_owned(),
            problem,
        };
        if !meta.is_dir() {
            return Err(unsafe_dir("is not a directory (a symbolic link?)".into()));
        }
        let uid = nix::unistd::geteuid().as_raw();
        if meta.uid() != uid {
            return Err(unsafe_dir(format!(
                "is owned by uid {}, not by this process (uid {uid})",
                meta.uid()
            )));
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The file name suffix shared by every artifact of this engine.
    fn engine_suffix(engine: &Engine) -> String {
        let mut engine_hash = DefaultHasher::new();
        WASMTIME_VERSION.hash(&mut engine_hash);
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        format!(
            "-wasmtime{WASMTIME_VERSION}-{:016x}{ARTIFACT_SUFFIX}",
            engine_hash.finish()
        )
    }

    /// Reads an artifact this module wrote: not through a symbolic link, a regular file owned
    /// by this uid and writable by no one else. `None` when it is absent or fails the checks.
    fn read_own(&self, path: &Path) -> Option<Vec<u8>> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        let own = meta.is_file()
            && meta.uid() == nix::unistd::geteuid().as_raw()
            && meta.mode() & 0o022 == 0;
        if !own {
            tracing::warn!(path = %path.display(), "ignoring a precompiled component this host did not write");
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Removes artifacts of other engines, stale temporary files, and the oldest artifacts
    /// beyond [`MAX_ARTIFACTS`], keeping `current`.
    fn evict(&self, engine: &Engine, current: &Path) {
        let suffix = Self::engine_suffix(engine);
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut ours = vec![];
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path == current {
                continue;
            }
            let foreign_engine = name.ends_with(ARTIFACT_SUFFIX) && !name.ends_with(&suffix);
            let stale_tmp = name.contains(".tmp-")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
            if foreign_engine || stale_tmp {
                let _ = fs::remove_file(&path);
            } else if name.ends_with(&suffix) {
                let modified = entry.metadata().and_then(|m| m.modified()).ok();
                ours.push((modified, path));
            }
        }
        if ours.len() >= MAX_ARTIFACTS {
            ours.sort();
            for (_, path) in &ours[..=ours.len() - MAX_ARTIFACTS] {
                let _ = fs::remove_file(path);
            }
        }
    }

    /// The artifact path for these component bytes under this engine.
    pub fn artifact_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let content = hex::encode(Sha256::digest(wasm));
        self.dir
            .join(format!("{content}{}", Self::engine_suffix(engine)))
    }

    /// Loads the component for `wasm`, compiling and storing it on a miss. An artifact that no
    /// longer deserializes (truncated, foreign) is replaced.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, Origin), CacheError> {
        let path = self.artifact_path(engine, wasm);
        if let Some(bytes) = self.read_own(&path) {
            // SAFETY: the bytes come from a regular file owned by this uid in our private
            // cache directory, written by `store` from `Engine::precompile_component`;
            // wasmtime still checks version and configuration.
            match unsafe { Component::deserialize(engine, &bytes) } {
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
        self.evict(engine, &path);
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
        // A fresh name, created exclusively (never through a link), private to this uid.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(path);
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(artifact)?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(write_err)
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

    #[test]
    fn the_directory_must_be_ours_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        fs::create_dir(&cache_dir).unwrap();
        fs::set_permissions(&cache_dir, fs::Permissions::from_mode(0o777)).unwrap();
        ArtifactCache::open(&cache_dir).unwrap();
        let mode = fs::metadata(&cache_dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);

        // Another user's directory is refused (the tests run as root, who can chown).
        nix::unistd::chown(&cache_dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = ArtifactCache::open(&cache_dir).err().expect("refused");
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(
            ArtifactCache::open(&link).is_err(),
            "a symbolic link is refused"
        );
    }

    #[test]
    fn an_artifact_behind_a_link_or_from_another_owner_is_not_deserialized() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(&dir.path().join("cache")).unwrap();
        let engine = engine();
        let wasm = wat::parse_str(WITH_MODULE).unwrap();
        let path = cache.artifact_path(&engine, &wasm);
        // A valid artifact placed elsewhere and linked in.
        let elsewhere = dir.path().join("planted.cwasm");
        fs::write(&elsewhere, engine.precompile_component(&wasm).unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(cache.load(&engine, &wasm).unwrap().1, Origin::Compiled);
        assert!(
            !fs::symlink_metadata(&path).unwrap().is_symlink(),
            "the link was replaced"
        );
        assert_eq!(cache.load(&engine, &wasm).unwrap().1, Origin::Cached);
        // Group-writable: not ours to trust.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(cache.load(&engine, &wasm).unwrap().1, Origin::Compiled);
    }

    #[test]
    fn old_artifacts_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let engine = engine();
        let foreign = dir.path().join("abc-wasmtime1.0.0-0000000000000000.cwasm");
        fs::write(&foreign, b"old").unwrap();
        for i in 0..MAX_ARTIFACTS + 3 {
            let wasm = wat::parse_str(format!(
                "(component (core module (func (export \"f{i}\"))))"
            ))
            .unwrap();
            cache.load(&engine, &wasm).unwrap();
        }
        assert!(!foreign.exists(), "another engine's artifact is evicted");
        let kept = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(kept, MAX_ARTIFACTS);
    }
}
