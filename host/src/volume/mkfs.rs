//! mkfs options a StorageClass may ask for, through the host's own `modcsi.io/mkfs-options`
//! parameter: checked against an allow-list for the filesystem at CreateVolume (so a bad option
//! fails provisioning, not a pod's start), carried in the volume context, and checked again at
//! NodeStage before anything reaches mkfs. Nothing outside the list is passed on.

/// The CreateVolume parameter and volume-context key.
pub const KEY: &str = "modcsi.io/mkfs-options";

/// The filesystem of a mount capability that names none.
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// `fs_type`, or the default when it is empty.
pub fn fs_type_or_default(fs_type: &str) -> &str {
    if fs_type.is_empty() {
        DEFAULT_FS_TYPE
    } else {
        fs_type
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("mkfs option {option:?} for {fs_type}: {why}")]
pub struct MkfsError {
    pub fs_type: String,
    pub option: String,
    pub why: String,
}

fn number_in(value: &str, allowed: impl Fn(u64) -> bool) -> bool {
    value.parse::<u64>().is_ok_and(allowed)
}

/// Each comma-separated item of `value` is one of `items` (`name=0|1` for names ending in `=`).
fn items_in(value: &str, items: &[&str]) -> bool {
    !value.is_empty()
        && value.split(',').all(|item| {
            items.iter().any(|allowed| match allowed.strip_suffix('=') {
                Some(name) => item
                    .strip_prefix(name)
                    .and_then(|v| v.strip_prefix('='))
                    .is_some_and(|v| v == "0" || v == "1"),
                None => item == *allowed,
            })
        })
}

/// What a flag's value may be; `None` for a flag that takes no value.
type Check = Option<fn(&str) -> bool>;

fn allowed(fs_type: &str, flag: &str) -> Option<Check> {
    let check: Check = match (fs_type, flag) {
        // Reserved-blocks percentage, bytes per inode, inode size, block size.
        ("ext4", "-m") => Some(|v| number_in(v, |n| n <= 50)),
        ("ext4", "-i") => Some(|v| number_in(v, |n| (1024..=1 << 26).contains(&n))),
        ("ext4", "-I") => Some(|v| matches!(v, "128" | "256" | "512" | "1024")),
        ("ext4", "-b") => Some(|v| matches!(v, "1024" | "2048" | "4096")),
        ("ext4", "-E") => Some(|v| {
            items_in(
                v,
                &[
                    "lazy_itable_init=",
                    "lazy_journal_init=",
                    "discard",
                    "nodiscard",
                ],
            )
        }),
        ("xfs", "-b") => Some(|v| {
            v.strip_prefix("size=").is_some_and(|n| {
                number_in(n, |n| n.is_power_of_two() && (512..=65536).contains(&n))
            })
        }),
        ("xfs", "-i") => Some(|v| matches!(v, "size=256" | "size=512" | "size=1024" | "size=2048")),
        ("xfs", "-m") => Some(|v| items_in(v, &["crc=", "reflink=", "bigtime=", "finobt="])),
        // Do not discard blocks at mkfs time.
        ("xfs", "-K") => None,
        _ => return None,
    };
    Some(check)
}

/// The allowed options in `text` (whitespace-separated: a flag, then its value) as mkfs
/// arguments for `fs_type`.
pub fn parse(fs_type: &str, text: &str) -> Result<Vec<String>, MkfsError> {
    let fs_type = fs_type_or_default(fs_type);
    let refuse = |option: &str, why: &str| MkfsError {
        fs_type: fs_type.to_owned(),
        option: option.to_owned(),
        why: why.to_owned(),
    };
    let mut args = vec![];
    let mut words = text.split_whitespace();
    while let Some(flag) = words.next() {
        let check = allowed(fs_type, flag).ok_or_else(|| refuse(flag, "not an allowed option"))?;
        args.push(flag.to_owned());
        if let Some(check) = check {
            let value = words.next().ok_or_else(|| refuse(flag, "needs a value"))?;
            if !check(value) {
                return Err(refuse(&format!("{flag} {value}"), "value not allowed"));
            }
            args.push(value.to_owned());
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_options_pass_through() {
        assert_eq!(
            parse("ext4", "-m 0  -E lazy_itable_init=0,nodiscard -I 512").unwrap(),
            ["-m", "0", "-E", "lazy_itable_init=0,nodiscard", "-I", "512"]
        );
        assert_eq!(
            parse("xfs", "-K -m reflink=1,crc=1 -b size=4096").unwrap(),
            ["-K", "-m", "reflink=1,crc=1", "-b", "size=4096"]
        );
        assert_eq!(parse("ext4", "").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn anything_else_is_refused() {
        for (fs, text) in [
            ("ext4", "-F"),                      // force: would format over a signature
            ("ext4", "-m 51"),                   // out of range
            ("ext4", "-m"),                      // no value
            ("ext4", "-E root_owner=0:0"),       // not listed
            ("ext4", "-E lazy_itable_init=2"),   // not 0 or 1
            ("ext4", "-K"),                      // an xfs flag
            ("xfs", "-f"),                       // force
            ("xfs", "-b size=3000"),             // not a power of two
            ("xfs", "-d file,name=/etc/passwd"), // not listed
            ("xfs", "-m reflink=1;reboot"),
            ("btrfs", "-m 1"),
        ] {
            assert!(parse(fs, text).is_err(), "{fs}: {text}");
        }
    }
}
