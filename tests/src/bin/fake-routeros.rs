//! A fake MikroTik RouterOS for the RDS backend's tests, and for people (`just fake-rds`): the
//! forced command of a real OpenSSH server, so the backend talks real SSH. It emulates the
//! RouterOS commands the RDS driver uses, on state kept in a directory:
//!
//! - `/disk add type=file file-path=… file-size=<n>[K|M|G|T] slot=… nvme-tcp-export=yes
//!   nvme-tcp-server-port=… nvme-tcp-server-nqn=…`, or with `copy-from=[find slot=…]`
//! - `/disk set [find slot=…] file-size=…`, `/disk remove [find slot=…]`
//! - `/disk print detail where slot=…` | `slot~"…"` | `mount-point="…"`
//! - `/file remove [find name="…"]`, `/file print detail where name="…"`
//! - `/system identity print`
//!
//! Disks are real sparse files under `<state>/files/<file-path>`. Output follows RouterOS:
//! a `Flags:` header, numbered entries whose long lines continue indented, sizes with digits
//! grouped by spaces, `no such item` for a `find` that matches nothing, `syntax error` for what
//! it does not understand. Every command received is appended to `<state>/commands.log`.
//! Faults come from `<state>/faults` (one per line): `slow=<ms>` answers late, `drop=<verb>`
//! performs the matching command and then ends the session without an answer, `fail=<verb>`
//! answers `failure: injected` without doing anything, and `odd=<verb>` answers an error in
//! words of the kind RouterOS adds over releases (not one of the known prefixes), again without
//! doing anything.
//!
//! Its limits: only these commands and conditions; RouterOS's own quirks beyond the public
//! driver's fixtures (exact column widths, every property of a disk) are not reproduced.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The pool every file disk lives on, as `/disk print` shows its mount point.
const POOL: &str = "storage-pool";
const POOL_BYTES: u64 = 64 << 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Disk {
    slot: String,
    file_path: String,
    file_size: u64,
    nvme_export: bool,
    nvme_port: Option<u16>,
    nvme_nqn: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    disks: Vec<Disk>,
}

struct Router {
    dir: PathBuf,
    state: State,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = match (args.next().as_deref(), args.next()) {
        (Some("--state"), Some(dir)) => PathBuf::from(dir),
        _ => {
            eprintln!("usage: fake-routeros --state DIR (the command in SSH_ORIGINAL_COMMAND)");
            std::process::exit(2);
        }
    };
    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    std::fs::create_dir_all(&dir).expect("state directory");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("commands.log"))
        .expect("command log");
    writeln!(log, "{command}").unwrap();
    // One command at a time, like the router's own configuration lock.
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|_| ())
        .map(|guard| {
            let faults = std::fs::read_to_string(dir.join("faults")).unwrap_or_default();
            let mut router = Router::open(&dir);
            let answer = router.answer(&command, &faults);
            print!("{answer}");
            std::io::stdout().flush().unwrap();
            drop(guard);
        })
        .unwrap();
}

/// Kills this session's sshd processes (`sshd: root@notty`, `sshd: root [priv]`, never the
/// listener), so the
/// client's connection drops mid-command, as when a router reboots or a link fails.
fn drop_connection() -> ! {
    let parent_of = |pid: u32| {
        modcsi_tests::process::proc_stat(pid)?
            .get(1)?
            .parse::<u32>()
            .ok()
    };
    let mut pid = std::process::id();
    while let Some(parent) = parent_of(pid) {
        let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).unwrap_or_default();
        if parent <= 1 || cmdline.windows(10).any(|w| w == b"[listener]") {
            break;
        }
        if cmdline.starts_with(b"sshd: ") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(parent as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        pid = parent;
    }
    std::process::exit(255)
}

/// `1073741824` → `1 073 741 824`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `1073741824` → `1.0GiB`, the way RouterOS shows file sizes.
fn human(n: u64) -> String {
    let units = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in units {
        if n >= 1 << shift {
            return format!("{:.1}{unit}", n as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{n}")
}

fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.chars().last()? {
        'K' | 'k' => (&text[..text.len() - 1], 10),
        'M' => (&text[..text.len() - 1], 20),
        'G' => (&text[..text.len() - 1], 30),
        'T' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Splits a command into words, keeping `[…]` and `"…"` together.
fn words(command: &str) -> Option<Vec<String>> {
    let mut out = vec![];
    let mut current = String::new();
    let (mut depth, mut quoted) = (0, false);
    for c in command.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '[' if !quoted => {
                depth += 1;
                current.push(c);
            }
            ']' if !quoted => {
                depth -= 1;
                current.push(c);
            }
            ' ' if !quoted && depth == 0 => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if quoted || depth != 0 {
        return None;
    }
    if !current.is_empty() {
        out.push(current);
    }
    Some(out)
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// `[find slot=x]` / `[find name="x"]` → ("slot", "x").
fn find(word: &str) -> Option<(String, String)> {
    let inner = word.strip_prefix("[find ")?.strip_suffix(']')?;
    let (k, v) = inner.split_once('=')?;
    Some((k.to_owned(), unquote(v).to_owned()))
}

impl Router {
    fn open(dir: &Path) -> Self {
        let state = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            dir: dir.to_owned(),
            state,
        }
    }

    fn save(&self) {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state).unwrap()).unwrap();
        std::fs::rename(tmp, self.dir.join("state.json")).unwrap();
    }

    fn file(&self, file_path: &str) -> PathBuf {
        self.dir
            .join("files")
            .join(file_path.trim_start_matches('/'))
    }

    fn answer(&mut self, command: &str, faults: &str) -> String {
        for fault in faults.lines() {
            if let Some(ms) = fault.strip_prefix("slow=").and_then(|m| m.parse().ok()) {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        let Some(words) = words(command) else {
            return "syntax error (unbalanced quotes or brackets)\n".into();
        };
        let verb = format!(
            "{} {}",
            words.first().map_or("", String::as_str),
            words.get(1).map_or("", String::as_str)
        );
        let short = verb.trim_start_matches('/').replace(' ', "-");
        if faults.lines().any(|f| f == format!("fail={short}")) {
            return "failure: injected\n".into();
        }
        if faults.lines().any(|f| f == format!("odd={short}")) {
            return "action timed out - try again, if error continues contact MikroTik support\n"
                .into();
        }
        let answer = match verb.as_str() {
            "/disk add" => self.disk_add(&words[2..]),
            "/disk set" => self.disk_set(&words[2..]),
            "/disk remove" => self.disk_remove(&words[2..]),
            "/disk print" => self.disk_print(&words[2..]),
            "/file remove" => self.file_remove(&words[2..]),
            "/file print" => self.file_print(&words[2..]),
            "/system identity" if words.get(2).map(String::as_str) == Some("print") => {
                "  name: fake-rds\n".into()
            }
            _ => format!(
                "bad command name {}\n",
                words.first().map_or("", String::as_str)
            ),
        };
        if faults.lines().any(|f| f == format!("drop={short}")) {
            // The work is done; the connection dies before the answer.
            drop_connection();
        }
        answer
    }

    fn properties(args: &[String]) -> Result<BTreeMap<String, String>, String> {
        let mut props = BTreeMap::new();
        for arg in args {
            let Some((k, v)) = arg.split_once('=') else {
                return Err(format!("syntax error (line 1 column 1): {arg}\n"));
            };
            props.insert(k.to_owned(), v.to_owned());
        }
        Ok(props)
    }

    fn disk_add(&mut self, args: &[String]) -> String {
        let props = match Self::properties(args) {
            Ok(p) => p,
            Err(e) => return e,
        };
        if props.get("type").map(String::as_str) != Some("file") {
            return "failure: only type=file is emulated\n".into();
        }
        let (Some(slot), Some(file_path)) = (props.get("slot"), props.get("file-path")) else {
            return "failure: slot and file-path are required\n".into();
        };
        let slot = unquote(slot).to_owned();
        if self.state.disks.iter().any(|d| d.slot == slot) {
            return "failure: disk with such slot already exists\n".into();
        }
        let source = match props.get("copy-from").map(|w| find(w)) {
            None => None,
            Some(Some((k, v))) if k == "slot" => {
                match self.state.disks.iter().find(|d| d.slot == v) {
                    Some(d) => Some(d.clone()),
                    None => return "no such item\n".into(),
                }
            }
            Some(_) => return "syntax error (copy-from)\n".into(),
        };
        let size = match (props.get("file-size"), &source) {
            (Some(s), _) => match parse_size(s) {
                Some(n) => n,
                None => return format!("failure: invalid value for argument file-size: {s}\n"),
            },
            (None, Some(src)) => src.file_size,
            (None, None) => return "failure: file-size is required\n".into(),
        };
        let used: u64 = self.state.disks.iter().map(|d| d.file_size).sum();
        if used + size > POOL_BYTES {
            return "failure: not enough space\n".into();
        }
        let file_path = unquote(file_path).to_owned();
        let path = self.file(&file_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if let Some(src) = &source {
            let status = std::process::Command::new("cp")
                .args(["--sparse=always"])
                .arg(self.file(&src.file_path))
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        file.set_len(size).unwrap();
        let export = props.get("nvme-tcp-export").map(String::as_str) == Some("yes");
        self.state.disks.push(Disk {
            slot,
            file_path,
            file_size: size,
            nvme_export: export,
            nvme_port: props
                .get("nvme-tcp-server-port")
                .and_then(|p| p.parse().ok()),
            nvme_nqn: props
                .get("nvme-tcp-server-nqn")
                .map(|n| unquote(n).to_owned()),
        });
        self.save();
        String::new()
    }

    fn disk_set(&mut self, args: &[String]) -> String {
        let Some((k, v)) = args.first().and_then(|w| find(w)) else {
            return "syntax error (expected [find …])\n".into();
        };
        let props = match Self::properties(&args[1..]) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let Some(index) = self
            .state
            .disks
            .iter()
            .position(|d| k == "slot" && d.slot == v)
        else {
            return "no such item\n".into();
        };
        if let Some(size) = props.get("file-size") {
            let Some(size) = parse_size(size) else {
                return format!("failure: invalid value for argument file-size: {size}\n");
            };
            let path = self.file(&self.state.disks[index].file_path);
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(size)
                .unwrap();
            self.state.disks[index].file_size = size;
        }
        self.save();
        String::new()
    }

    fn disk_remove(&mut self, args: &[String]) -> String {
        let Some((k, v)) = args.first().and_then(|w| find(w)) else {
            return "syntax error (expected [find …])\n".into();
        };
        let before = self.state.disks.len();
        self.state.disks.retain(|d| !(k == "slot" && d.slot == v));
        if self.state.disks.len() == before {
            return "no such item\n".into();
        }
        // Like RouterOS: the backing file stays until `/file remove`.
        self.save();
        String::new()
    }

    fn file_remove(&mut self, args: &[String]) -> String {
        let Some((k, v)) = args.first().and_then(|w| find(w)) else {
            return "syntax error (expected [find …])\n".into();
        };
        let path = self.file(&v);
        if k != "name" || std::fs::remove_file(&path).is_err() {
            return "no such item\n".into();
        }
        String::new()
    }

    fn file_print(&self, args: &[String]) -> String {
        let mut out = String::from("Flags: R - READONLY\n");
        if let [detail, wh, cond] = args
            && detail == "detail"
            && wh == "where"
            && let Some(("name", v)) = cond.split_once('=')
        {
            let name = unquote(v);
            if let Ok(meta) = std::fs::metadata(self.file(name)) {
                out.push_str(&format!(
                    " 0   name=\"{name}\" type=\".img file\" size={} creation-time=2026-11-23 00:00:00\n",
                    grouped(meta.len())
                ));
            }
        }
        out
    }

    fn disk_print(&self, args: &[String]) -> String {
        let cond = match args {
            [detail, wh, cond] if detail == "detail" && wh == "where" => cond.as_str(),
            [detail] if detail == "detail" => "",
            _ => return "syntax error (expected detail where …)\n".into(),
        };
        let mut out = String::from(
            "Flags: X - DISABLED, I - INACTIVE, B - BLOCK-DEVICE, M - MOUNTED, F - FORMATTING\n",
        );
        if let Some(mp) = cond.strip_prefix("mount-point=") {
            if unquote(mp) == POOL {
                let used: u64 = self.state.disks.iter().map(|d| d.file_size).sum();
                out.push_str(&format!(
                    " 0 BM type=hardware slot=\"{POOL}\" slot-default=\"\" parent=none model=\"fake NVMe\"\n      size={} free={} mount-point=\"{POOL}\" fs=btrfs\n",
                    grouped(POOL_BYTES),
                    grouped(POOL_BYTES - used)
                ));
            }
            return out;
        }
        // `~` is a regular expression in RouterOS; literal patterns (all the driver sends) match
        // as substrings here.
        let matches = |d: &Disk| {
            if let Some(v) = cond.strip_prefix("slot~") {
                d.slot.contains(unquote(v))
            } else if let Some(v) = cond.strip_prefix("slot=") {
                d.slot == unquote(v)
            } else {
                cond.is_empty()
            }
        };
        for (i, d) in self.state.disks.iter().filter(|d| matches(d)).enumerate() {
            let mut line = format!(
                " {i:<2} B type=file slot=\"{}\" slot-default=\"\" parent=none fs=- model=\"file\" size={}\n",
                d.slot,
                grouped(d.file_size)
            );
            if d.nvme_export {
                line.push_str(&format!(
                    "      nvme-tcp-export=yes nvme-tcp-server-port={} nvme-tcp-server-nqn=\"{}\" nvme-tcp-server-allow-host-name=\"\"\n",
                    d.nvme_port.unwrap_or(4420),
                    d.nvme_nqn.as_deref().unwrap_or("")
                ));
            } else {
                line.push_str("      nvme-tcp-export=no\n");
            }
            line.push_str(&format!(
                "      iscsi-export=no nfs-sharing=no smb-sharing=no file-path={} file-size={}\n",
                d.file_path,
                human(d.file_size)
            ));
            out.push_str(&line);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routeros_number_formats() {
        assert_eq!(grouped(53_687_091_200), "53 687 091 200");
        assert_eq!(grouped(420), "420");
        assert_eq!(human(50 << 30), "50.0GiB");
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1536M"), Some(1536 << 20));
        assert_eq!(parse_size("x"), None);
    }
}
