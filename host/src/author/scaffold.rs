//! `modcsi backend new`: a backend crate that builds for wasm32-wasip2 and passes
//! `modcsi backend check` as made. It depends on the SDK by git or by version, never by a path
//! into the modcsi repository, so it lives anywhere.

use std::path::{Path, PathBuf};

/// Where the new crate gets the SDK from.
#[derive(Debug, Clone)]
pub enum SdkSource {
    /// A git repository holding the modcsi workspace, at a revision (a branch, tag or commit)
    /// or its default branch.
    Git { url: String, rev: Option<String> },
    /// A version from the crate registry.
    Version(String),
}

impl SdkSource {
    fn dependency(&self) -> String {
        match self {
            SdkSource::Git { url, rev: None } => format!("{{ git = {url:?} }}"),
            SdkSource::Git {
                url,
                rev: Some(rev),
            } => format!("{{ git = {url:?}, rev = {rev:?} }}"),
            SdkSource::Version(version) => format!("{version:?}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "{0:?} is not a backend name: use 2 to 40 lowercase letters, digits and dashes, \
             starting with a letter"
    )]
    Name(String),
    #[error("{0} already exists: choose another name or directory")]
    Exists(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

const FILES: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("template/Cargo.toml.in")),
    (
        ".cargo/config.toml",
        include_str!("template/config.toml.in"),
    ),
    (".gitignore", include_str!("template/gitignore.in")),
    ("README.md", include_str!("template/README.md.in")),
    ("src/lib.rs", include_str!("template/lib.rs.in")),
];

/// Writes the crate `name` into `parent/name` and returns that directory.
pub fn new_backend(parent: &Path, name: &str, sdk: &SdkSource) -> Result<PathBuf, ScaffoldError> {
    let valid = (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let crate_name = name.replace('-', "_");
    for (file, template) in FILES {
        let path = dir.join(file);
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk.dependency());
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        written.map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_and_id_safe() {
        let dir = std::env::temp_dir().join(format!("modcsi-scaffold-{}", std::process::id()));
        let sdk = SdkSource::Version("0.2".into());
        for bad in [
            "",
            "x",
            "My-Backend",
            "9lives",
            "a_b",
            "ends-",
            "a/../b",
            "a b",
        ] {
            assert!(
                matches!(new_backend(&dir, bad, &sdk), Err(ScaffoldError::Name(_))),
                "{bad:?}"
            );
        }
        let made = new_backend(&dir, "my-store", &sdk).unwrap();
        let manifest = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-store\""), "{manifest}");
        assert!(
            manifest.contains("modcsi-backend-sdk = \"0.2\""),
            "{manifest}"
        );
        let lib = std::fs::read_to_string(made.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("name: \"my-store\".into()") && !lib.contains("{{"),
            "{lib}"
        );
        assert!(matches!(
            new_backend(&dir, "my-store", &sdk),
            Err(ScaffoldError::Exists(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn git_sources_name_their_revision() {
        let git = SdkSource::Git {
            url: "https://example.com/modcsi.git".into(),
            rev: Some("v0.2.3".into()),
        };
        assert_eq!(
            git.dependency(),
            r#"{ git = "https://example.com/modcsi.git", rev = "v0.2.3" }"#
        );
    }
}
