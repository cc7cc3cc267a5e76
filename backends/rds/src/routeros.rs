//! RouterOS: the commands the backend sends, built only from values that passed a strict
//! pattern, and the parser for what `/disk print detail` answers.

use std::collections::BTreeMap;

/// A value that may appear in a command: letters, digits and `.` `_` `-` `:` `/`, nothing
/// RouterOS or a shell would read as syntax (no spaces, quotes, brackets, `;`, `$`, `=`).
pub fn is_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b))
        && !value.split('/').any(|part| part == "..")
}

/// What RouterOS said, when it refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NoSuchItem,
    Failure(String),
}

/// RouterOS answers errors in text on a successful session.
pub fn refusal(output: &str) -> Option<Refusal> {
    let first = output.lines().find(|l| !l.trim().is_empty())?.trim();
    if first.starts_with("no such item") || first.starts_with("input does not match") {
        return Some(Refusal::NoSuchItem);
    }
    [
        "failure:",
        "syntax error",
        "bad command",
        "expected ",
        "invalid value",
    ]
    .iter()
    .any(|p| first.starts_with(p))
    .then(|| Refusal::Failure(first.to_owned()))
}

/// One entry of a `print detail`: its properties.
pub type Entry = BTreeMap<String, String>;

/// Parses `print detail`: a `Flags:` header, then numbered entries whose lines continue
/// indented; values are bare, quoted, or numbers with digits grouped by spaces.
pub fn parse_detail(output: &str) -> Vec<Entry> {
    let mut texts: Vec<String> = vec![];
    for line in output.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("Flags:") || line.starts_with("Columns:") || trimmed.is_empty() {
            continue;
        }
        let starts_entry = trimmed
            .split_whitespace()
            .next()
            .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()));
        match texts.last_mut() {
            Some(current) if !starts_entry => {
                current.push(' ');
                current.push_str(trimmed);
            }
            _ => texts.push(trimmed.to_owned()),
        }
    }
    texts.iter().map(|t| properties(t)).collect()
}

fn properties(text: &str) -> Entry {
    let b = text.as_bytes();
    let mut entry = Entry::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-') {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' || i == start {
            // A flag or an index: skip the word.
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            continue;
        }
        let key = text[start..i].to_owned();
        i += 1;
        let value = if b.get(i) == Some(&b'"') {
            let end = text[i + 1..].find('"').map_or(b.len(), |e| i + 1 + e);
            let v = text[i + 1..end].to_owned();
            i = (end + 1).min(b.len());
            v
        } else {
            let s = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            let mut v = text[s..i].to_owned();
            // `size=53 687 091 200`: digit groups of three continue a number.
            while v.bytes().all(|c| c.is_ascii_digit())
                && !v.is_empty()
                && i + 4 <= b.len()
                && b[i] == b' '
                && b[i + 1..i + 4].iter().all(u8::is_ascii_digit)
                && (i + 4 == b.len() || b[i + 4] == b' ')
            {
                v.push_str(&text[i + 1..i + 4]);
                i += 4;
            }
            v
        };
        entry.insert(key, value);
    }
    entry
}

/// A number as RouterOS prints it, digits grouped or not.
pub fn number(value: &str) -> Option<u64> {
    value.replace(' ', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_detail_of_a_file_disk() {
        let out = "Flags: X - DISABLED, B - BLOCK-DEVICE\n 0  B type=file slot=\"pvc-test-123\" slot-default=\"\" size=53 687 091 200\n      nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=\"nqn.2000-02.com.mikrotik:pvc-test-123\"\n      file-path=/storage-pool/test.img file-size=50.0GiB\n 1  B type=file slot=\"snap-1\" size=1 024\n";
        let entries = parse_detail(out);
        assert_eq!(entries.len(), 2);
        let d = &entries[0];
        assert_eq!(d["slot"], "pvc-test-123");
        assert_eq!(number(&d["size"]), Some(53_687_091_200));
        assert_eq!(
            d["nvme-tcp-server-nqn"],
            "nqn.2000-02.com.mikrotik:pvc-test-123"
        );
        assert_eq!(d["file-path"], "/storage-pool/test.img");
        assert_eq!(d["slot-default"], "");
        assert_eq!(number(&entries[1]["size"]), Some(1024));
        assert!(parse_detail("Flags: X - DISABLED\n").is_empty());
    }

    #[test]
    fn refusals_and_safe_values() {
        assert_eq!(refusal("no such item\n"), Some(Refusal::NoSuchItem));
        assert!(matches!(
            refusal("failure: not enough space"),
            Some(Refusal::Failure(_))
        ));
        assert_eq!(refusal(""), None);
        assert!(
            is_safe("pvc-0a1b")
                && is_safe("/storage-pool/metal-csi")
                && is_safe("nqn.2000-02.com.mikrotik:x")
        );
        for bad in [
            "a b", "a;b", "a\"b", "[find]", "$(x)", "a=b", "/x/../y", "", "a`b",
        ] {
            assert!(!is_safe(bad), "{bad}");
        }
    }
}
