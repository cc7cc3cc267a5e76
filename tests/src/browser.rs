//! A page rendered in a real browser, for tests of HTML the host serves (the audit page): Debian's
//! headless Chromium (`chromium`, which `.ci/run` installs) takes a [`screenshot`] of a URL at a
//! given window size, or prints its DOM ([`dom`]) once the page's scripts have run.
//!
//! Limits: the picture is what this Chromium draws, and fonts (and so text pixels, line heights
//! and anything sized by text) differ between machines, so tests look for colours and regions
//! (a bar's colour, how many table rows are tinted, where a block sits), never for the pixels of
//! text; text is checked in [`dom`]'s output. A screenshot is the viewport only (`width` x
//! `height` CSS pixels at device scale factor 1), not the whole page. Each call starts a fresh
//! browser with its own profile (about half a second), so there is no state between calls.
//! Scripts get a budget of virtual time ([`SCRIPT_BUDGET_MS`]): timers inside it fire at once, and
//! the clock waits for pending network requests, so a page that fetches its data and then draws
//! it is captured after drawing.
//!
//! When a test fails on a picture, write [`Screenshot::png`] to a file for a person to look at.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long Chromium may take for one page before it is killed.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Virtual milliseconds the page's scripts (timers, fetches) get before the capture.
pub const SCRIPT_BUDGET_MS: u32 = 5000;

/// A decoded screenshot: `width` x `height` pixels, row by row.
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    /// The PNG as Chromium wrote it, to save when a test fails.
    pub png: Vec<u8>,
    pixels: Vec<[u8; 3]>,
}

/// Renders `url` in a `width` x `height` window and returns what it shows. Panics, with
/// Chromium's stderr, when the page cannot be loaded or Chromium fails.
pub fn screenshot(url: &str, width: u32, height: u32) -> Screenshot {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("shot.png");
    let run = chromium(
        dir.path(),
        &[
            format!("--window-size={width},{height}"),
            "--hide-scrollbars".into(),
            format!("--screenshot={}", path.display()),
        ],
        url,
    );
    let png = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "chromium wrote no screenshot of {url} ({e}); its stderr:\n{}",
            run.stderr
        )
    });
    Screenshot::decode(png)
}

/// The DOM of `url` after its scripts ran, serialized as HTML: what a test checks text in.
/// Panics, with Chromium's stderr, when the page cannot be loaded or Chromium fails.
pub fn dom(url: &str) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = chromium(dir.path(), &["--dump-dom".into()], url);
    assert!(
        !run.stdout.trim().is_empty(),
        "chromium printed no DOM for {url}; its stderr:\n{}",
        run.stderr
    );
    run.stdout
}

struct Run {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `url` with a fresh profile under `dir`, killing it (and the helper
/// processes it started) after [`TIMEOUT`].
fn chromium(dir: &std::path::Path, extra: &[String], url: &str) -> Run {
    let mut command = Command::new("chromium");
    command
        // `--headless` is the new headless mode in this Chromium (the old one is gone); no sandbox
        // because tests run as root; no GPU in CI. Scale factor 1 and the sRGB profile make one
        // CSS pixel one PNG pixel and `#ff0000` exactly [255, 0, 0] whatever the machine's display.
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--force-device-scale-factor=1",
            "--force-color-profile=srgb",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--virtual-time-budget={SCRIPT_BUDGET_MS}"))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the renderer and the zygotes too.
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start chromium (is Debian's chromium installed?): {e}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // Still running (not reaped), so its process group is still its own.
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        stdout: stdout.join().unwrap(),
        // Without a D-Bus (containers, CI) Chromium logs a few dozen lines about it; they never
        // explain a failure.
        stderr: stderr
            .join()
            .unwrap()
            .lines()
            .filter(|line| !line.contains(":ERROR:dbus/"))
            .map(|line| format!("{line}\n"))
            .collect(),
    };
    match status {
        None => panic!(
            "chromium took longer than {TIMEOUT:?} on {url}; its stderr:\n{}",
            run.stderr
        ),
        Some(status) if !status.success() => {
            panic!("chromium on {url}: {status}; its stderr:\n{}", run.stderr)
        }
        // A page that fails to load still exits 0, saying so only on stderr.
        Some(_) if run.stderr.contains("Page load failed") => {
            panic!("chromium could not load {url}; its stderr:\n{}", run.stderr)
        }
        Some(_) => run,
    }
}

impl Screenshot {
    /// Decodes an 8-bit PNG (RGB or RGBA, as Chromium writes; grey and palette images too).
    /// Alpha is dropped: Chromium's screenshots are opaque.
    pub fn decode(png: Vec<u8>) -> Self {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(&png[..]));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("a PNG");
        let size = reader
            .output_buffer_size()
            .expect("PNG size fits in memory");
        let mut buffer = vec![0; size];
        let frame = reader.next_frame(&mut buffer).expect("PNG image data");
        let channels = frame.color_type.samples();
        let mut pixels = Vec::with_capacity((frame.width * frame.height) as usize);
        for row in buffer.chunks(frame.line_size).take(frame.height as usize) {
            for pixel in row[..frame.width as usize * channels].chunks(channels) {
                pixels.push(match frame.color_type {
                    png::ColorType::Rgb | png::ColorType::Rgba => [pixel[0], pixel[1], pixel[2]],
                    png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => [pixel[0]; 3],
                    png::ColorType::Indexed => unreachable!("EXPAND turns palettes into RGB"),
                });
            }
        }
        Self {
            width: frame.width,
            height: frame.height,
            png,
            pixels,
        }
    }

    /// The colour at (`x`, `y`), from the top left.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) is outside the {}x{} screenshot",
            self.width,
            self.height
        );
        self.pixels[(y * self.width + x) as usize]
    }

    /// How many pixels are `color`, each channel within `tolerance`.
    pub fn count(&self, color: [u8; 3], tolerance: u8) -> usize {
        self.count_in((0, 0, self.width, self.height), color, tolerance)
    }

    /// How many pixels in `rect` (x, y, width, height; clipped to the screenshot) are `color`,
    /// each channel within `tolerance`.
    pub fn count_in(&self, rect: (u32, u32, u32, u32), color: [u8; 3], tolerance: u8) -> usize {
        let (x, y, w, h) = rect;
        let (x_end, y_end) = (
            x.saturating_add(w).min(self.width),
            y.saturating_add(h).min(self.height),
        );
        (y.min(y_end)..y_end)
            .map(|row| {
                (x.min(x_end)..x_end)
                    .filter(|&column| near(self.pixel(column, row), color, tolerance))
                    .count()
            })
            .sum()
    }

    /// The rows (y, top first) with at least `min_pixels` pixels of `color` (each channel within
    /// `tolerance`): where table rows, bars and bands of a colour are.
    pub fn rows_with(&self, color: [u8; 3], tolerance: u8, min_pixels: usize) -> Vec<u32> {
        (0..self.height)
            .filter(|&row| self.count_in((0, row, self.width, 1), color, tolerance) >= min_pixels)
            .collect()
    }
}

fn near(pixel: [u8; 3], color: [u8; 3], tolerance: u8) -> bool {
    pixel
        .iter()
        .zip(color)
        .all(|(&p, c)| p.abs_diff(c) <= tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: [u8; 3] = [255, 0, 0];
    const WHITE: [u8; 3] = [255, 255, 255];

    /// A 200x50 red block at (120, 80) on a white page, and text a script adds after a timer.
    const PAGE: &str = r#"<!doctype html>
<html><body style="margin:0;background:#ffffff">
<div id="box" style="position:absolute;left:120px;top:80px;width:200px;height:50px;
  background:#ff0000;color:#ff0000">red box text</div>
<script>
  setTimeout(() => document.body.insertAdjacentHTML("beforeend",
    '<p id="late" style="position:absolute;left:0;top:250px;margin:0">added by a timer</p>'), 1000);
</script>
</body></html>
"#;

    #[test]
    fn renders_a_page_and_reads_its_dom() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page.html");
        std::fs::write(&path, PAGE).unwrap();
        let url = format!("file://{}", path.display());

        let shot = screenshot(&url, 400, 300);
        let keep = || {
            let kept = std::env::temp_dir().join("modcsi-browser-test.png");
            std::fs::write(&kept, &shot.png).unwrap();
            kept.display().to_string()
        };
        assert_eq!((shot.width, shot.height), (400, 300), "see {}", keep());
        let red = shot.count(RED, 8);
        assert!(
            (9_000..=11_000).contains(&red),
            "{red} red pixels, not about 10000: see {}",
            keep()
        );
        assert_eq!(
            shot.count_in((120, 80, 200, 50), RED, 8),
            red,
            "red outside the box: see {}",
            keep()
        );
        assert_eq!(shot.rows_with(RED, 8, 150), (80..130).collect::<Vec<_>>());
        assert_eq!(shot.pixel(220, 105), RED);
        assert_eq!(shot.pixel(0, 0), WHITE);
        assert_eq!(shot.pixel(119, 105), WHITE);
        assert_eq!(shot.pixel(320, 105), WHITE);

        let dom = dom(&url);
        assert!(dom.contains("red box text"), "{dom}");
        assert!(dom.contains("added by a timer"), "scripts ran: {dom}");
    }

    #[test]
    fn an_unreachable_page_fails_with_the_reason() {
        let port = crate::free_port();
        let error = std::panic::catch_unwind(|| dom(&format!("http://127.0.0.1:{port}/")))
            .expect_err("nothing listens there");
        let message = error.downcast_ref::<String>().unwrap();
        assert!(message.contains("ERR_CONNECTION_REFUSED"), "{message}");
    }
}
