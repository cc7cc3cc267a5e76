//! Validation of every value that reaches the filesystem or a backend. Pure functions, no I/O;
//! the filesystem side of path safety is `node::paths`.

use std::path::Path;

/// Longest accepted volume id or name, in bytes (the CSI spec's recommended string bound).
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted target path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest node id, in bytes (the CSI spec's bound).
pub const MAX_NODE_ID_LEN: usize = 256;
/// Largest map (parameters, contexts, secrets) in bytes of keys and values (the CSI spec's bound).
pub const MAX_MAP_BYTES: usize = 4096;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("{what} is required")]
    Missing { what: &'static str },
    #[error("{what} {value:?} is longer than {max} bytes")]
    TooLong {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} {value:?} {reason}")]
    Malformed {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Accepts a volume id that is safe as a single path component and in any backend command:
/// ASCII letters, digits, `.`, `_`, `-` and `:`, not starting with `.` or `-`.
pub fn volume_id(id: &str) -> Result<&str, InvalidInput> {
    token("volume id", id)
}

/// Accepts a node id: the characters of [`token`], at most 256 bytes.
pub fn node_id(value: &str) -> Result<&str, InvalidInput> {
    bounded_token("node id", value, MAX_NODE_ID_LEN)
}

/// Refuses a map over 4 KiB of keys and values.
pub fn map_size<'a, I>(what: &'static str, map: I) -> Result<(), InvalidInput>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    let bytes: usize = map.into_iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_MAP_BYTES {
        return Err(InvalidInput::TooLong {
            what,
            value: format!("{bytes} bytes of keys and values"),
            max: MAX_MAP_BYTES,
        });
    }
    Ok(())
}

/// Like [`volume_id`], for other identifiers that may reach paths or commands.
pub fn token<'a>(what: &'static str, value: &'a str) -> Result<&'a str, InvalidInput> {
    bounded_token(what, value, MAX_ID_LEN)
}

fn bounded_token<'a>(
    what: &'static str,
    value: &'a str,
    max: usize,
) -> Result<&'a str, InvalidInput> {
    let malformed = |reason| InvalidInput::Malformed {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(InvalidInput::Missing { what });
    }
    if value.len() > max {
        return Err(InvalidInput::TooLong {
            what,
            value: value.to_owned(),
            max,
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:".contains(*c)))
    {
        return Err(malformed(if bad == '/' {
            "contains '/'"
        } else if bad.is_control() {
            "contains a control character"
        } else {
            "contains a character outside [A-Za-z0-9._:-]"
        }));
    }
    if value.starts_with('.') || value.starts_with('-') {
        return Err(malformed("starts with '.' or '-'"));
    }
    Ok(value)
}

/// A CreateVolume name: the orchestrator's idempotency key. It reaches backends, never paths,
/// so it may hold any printable character.
pub fn volume_name(name: &str) -> Result<&str, InvalidInput> {
    let what = "volume name";
    if name.is_empty() {
        return Err(InvalidInput::Missing { what });
    }
    if name.len() > MAX_ID_LEN {
        return Err(InvalidInput::TooLong {
            what,
            value: name.to_owned(),
            max: MAX_ID_LEN,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidInput::Malformed {
            what,
            value: name.to_owned(),
            reason: "contains a control character",
        });
    }
    Ok(name)
}

/// Accepts a path that is absolute and already normal: no `.` or `..`, no empty components,
/// no trailing `/`, no control characters.
pub fn target_path<'a>(what: &'static str, path: &'a str) -> Result<&'a Path, InvalidInput> {
    let malformed = |reason| InvalidInput::Malformed {
        what,
        value: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(InvalidInput::Missing { what });
    }
    if path.len() > MAX_PATH_LEN {
        return Err(InvalidInput::TooLong {
            what,
            value: path.to_owned(),
            max: MAX_PATH_LEN,
        });
    }
    if path.chars().any(char::is_control) {
        return Err(malformed("contains a control character"));
    }
    if !path.starts_with('/') {
        return Err(malformed("is not absolute"));
    }
    if path == "/" {
        return Err(malformed("is the root directory"));
    }
    if path.ends_with('/') || path.contains("//") {
        return Err(malformed(
            "is not normalised (empty component or trailing '/')",
        ));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(malformed("is not normalised ('.' or '..')"));
    }
    Ok(Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids() {
        for ok in [
            "nlc-8f1c2f4e-5a8b-5c9e-9a41-0c3c1d2e4f50",
            "pvc_1",
            "a:b.c",
            "V9",
        ] {
            assert_eq!(volume_id(ok), Ok(ok));
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        for (bad, reason) in [
            ("", "required"),
            ("a/b", "'/'"),
            ("..", "starts with"),
            (".hidden", "starts with"),
            ("-rf", "starts with"),
            ("a\nb", "control"),
            ("a\0b", "control"),
            ("a b", "outside"),
            ("a;reboot", "outside"),
            ("$(x)", "outside"),
            ("é", "outside"),
            (long.as_str(), "longer"),
        ] {
            let err = volume_id(bad).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad:?}: {err}");
        }
        assert_eq!(
            volume_id(&"a".repeat(MAX_ID_LEN)).map(str::len),
            Ok(MAX_ID_LEN)
        );
    }

    #[test]
    fn volume_names() {
        assert!(volume_name("pvc-1 with spaces/and slashes").is_ok());
        assert!(volume_name("").is_err());
        assert!(volume_name("a\tb").is_err());
        assert!(volume_name(&"n".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn target_paths() {
        for ok in ["/var/lib/kubelet/pods/x/volumes/mount", "/a"] {
            assert_eq!(target_path("target path", ok).unwrap(), Path::new(ok));
        }
        for (bad, reason) in [
            ("", "required"),
            ("relative/path", "not absolute"),
            ("/", "root"),
            ("/a/../etc", "'..'"),
            ("/a/./b", "'.'"),
            ("/a//b", "empty component"),
            ("/a/b/", "trailing"),
            ("/a\nb", "control"),
        ] {
            let err = target_path("target path", bad).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad:?}: {err}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(target_path("target path", &long).is_err());
    }

    #[test]
    fn node_ids_and_maps() {
        assert!(node_id(&"n".repeat(MAX_NODE_ID_LEN)).is_ok());
        assert!(node_id(&"n".repeat(MAX_NODE_ID_LEN + 1)).is_err());
        let small = std::collections::HashMap::from([("k".to_owned(), "v".to_owned())]);
        assert!(map_size("parameters", &small).is_ok());
        let big = std::collections::HashMap::from([("k".to_owned(), "v".repeat(MAX_MAP_BYTES))]);
        let err = map_size("parameters", &big).unwrap_err().to_string();
        assert!(err.contains("parameters") && err.contains("4096"), "{err}");
    }
}
