//! The filesystem side of path safety: a request's path must not lead through a symbolic link.
//! (The lexical checks are `volume::validate::target_path`.)

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnsafePath {
    #[error("{path} is a symbolic link")]
    Symlink { path: PathBuf },
    #[error("{path} resolves through a symbolic link to {resolved}")]
    ThroughSymlink { path: PathBuf, resolved: PathBuf },
    #[error("cannot inspect {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that neither a validated absolute `path` nor any existing ancestor is a symbolic
/// link, so a later mkdir, mount or rmdir acts exactly where the request said.
pub fn check_no_symlinks(path: &Path) -> Result<(), UnsafePath> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(UnsafePath::Symlink {
                path: path.to_owned(),
            });
        }
        Ok(_) | Err(_) => {}
    }
    let existing = path
        .ancestors()
        .find(|a| std::fs::symlink_metadata(a).is_ok())
        .unwrap_or(Path::new("/"));
    let resolved = std::fs::canonicalize(existing).map_err(|source| UnsafePath::Io {
        path: existing.to_owned(),
        source,
    })?;
    if resolved != existing {
        return Err(UnsafePath::ThroughSymlink {
            path: path.to_owned(),
            resolved,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_refused_anywhere_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, base.join("link")).unwrap();

        check_no_symlinks(&real.join("new/target")).unwrap();
        check_no_symlinks(&real).unwrap();
        assert!(matches!(
            check_no_symlinks(&base.join("link")),
            Err(UnsafePath::Symlink { .. })
        ));
        assert!(matches!(
            check_no_symlinks(&base.join("link/new/target")),
            Err(UnsafePath::ThroughSymlink { .. })
        ));
    }
}
