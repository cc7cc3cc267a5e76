//! This process's mappings of its own code. Startup runs code the volume path never does
//! (arguments, loading the component, the clients' set-up); [`release`] drops the
//! process's mappings of the executable's code once it serves, so only the code calls run
//! is mapped again, from the page cache, when first used.

use std::io;
use std::path::Path;
use std::ptr::NonNull;

use nix::sys::mman::{MmapAdvise, madvise};

/// The executable's code mappings (`r-xp`, backed by the executable's file) in `maps`, the
/// text of /proc/self/maps: (start, length).
fn code_mappings(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if perms != "r-xp" || Path::new(path) != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end.checked_sub(start)?))
        })
        .collect()
}

/// Drops the mappings of the executable's code pages; returns how many bytes of mappings it
/// advised. The pages stay in the page cache.
pub fn release() -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut released = 0;
    for (start, len) in code_mappings(&maps, &exe) {
        let Some(addr) = NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is a private mapping of this executable's code, which nothing
        // writes (no text relocations; a position-independent executable). Dropping its pages
        // loses nothing: a thread running code there faults the page in again from the file.
        unsafe { madvise(addr, len, MmapAdvise::MADV_DONTNEED) }.map_err(io::Error::from)?;
        released += len;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executables_code_and_nothing_else() {
        let maps = "\
55d0a0000000-55d0a0800000 r--p 00000000 fe:01 42 /usr/bin/modcsi
55d0a0800000-55d0a2800000 r-xp 00800000 fe:01 42 /usr/bin/modcsi
55d0a2800000-55d0a2900000 r--p 02800000 fe:01 42 /usr/bin/modcsi
7f0000000000-7f0000100000 r-xp 00028000 fe:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(
            code_mappings(maps, Path::new("/usr/bin/modcsi")),
            vec![(0x55d0a0800000, 0x2000000)]
        );
    }

    /// Pages of this executable's code mapped in this process now (/proc/self/pagemap): read
    /// in one go, so that little code runs between the release and the count.
    fn mapped_code_pages() -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let code = code_mappings(&std::fs::read_to_string("/proc/self/maps").unwrap(), &exe);
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut entries = vec![Vec::new(); code.len()];
        for ((start, len), entries) in code.iter().zip(&mut entries) {
            entries.resize(len / 4096 * 8, 0);
            pagemap
                .seek(SeekFrom::Start(*start as u64 / 4096 * 8))
                .unwrap();
            pagemap.read_exact(entries).unwrap();
        }
        entries
            .iter()
            .flat_map(|e| e.chunks(8))
            .filter(|e| e[7] & 0x80 != 0)
            .count()
    }

    #[test]
    fn released_code_leaves_the_process_and_runs_again() {
        let before = mapped_code_pages();
        assert!(release().unwrap() > 0, "a test binary has code mapped");
        // Counting again runs code again, from pages mapped back in: those the first count ran
        // on and the kernel's neighbours of them (64 KiB, or a whole large folio of the page
        // cache). What ran only before (the test harness's start) is gone.
        let after = mapped_code_pages();
        assert!(
            after < before,
            "{before} pages of code mapped before, {after} after"
        );
    }
}
