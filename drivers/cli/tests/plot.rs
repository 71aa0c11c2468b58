//! `demo --plot`: the SVG it writes is rendered by a real browser (Debian's `chromium`, headless) and the
//! screenshot is checked: the expected size, not blank, the state bands (STABLE, DEGRADED for the latency
//! spike, RECONNECTING after the blackhole) and the marks (dead peer, gap report, rollover, token refresh) in
//! their colours. Skips with a message when chromium is missing, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_genesys-keepalive");
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 720;

fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no chromium: .ci/run must `apt-get install -y chromium`"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install -y chromium); not in CI, so skipping");
    }
    found
}

/// RGBA pixels of a PNG, with its size.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("the screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "colour PNG expected, got {:?}",
        info.color_type
    );
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

/// Pixels within `tolerance` of `c` in every channel.
fn count(pixels: &[[u8; 3]], c: [u8; 3], tolerance: u8) -> usize {
    pixels
        .iter()
        .filter(|p| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= tolerance))
        .count()
}

#[test]
fn chromium_renders_the_demo_plot_with_bands_and_marks() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("gk-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let svg = dir.join("demo.svg");
    let png = dir.join("demo.png");

    let out = Command::new(BIN)
        .args(["demo", "--seconds", "14", "--seed", "5", "--plot"])
        .arg(&svg)
        .stdin(Stdio::null())
        .output()
        .expect("the demo runs");
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(text.contains("<svg"), "not an SVG");

    let shot = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", dir.join("profile").display()),
            &format!("--screenshot={}", png.display()),
            &format!("--window-size={WIDTH},{HEIGHT}"),
        ])
        .arg(format!("file://{}", svg.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success() && png.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );

    let (w, h, pixels) = decode(&png);
    assert_eq!((w, h), (WIDTH, HEIGHT), "screenshot size");
    let mut distinct: Vec<[u8; 3]> = pixels.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let white = count(&pixels, [255, 255, 255], 0);
    eprintln!(
        "screenshot {w}x{h}: {} distinct colours, {:.1} % white",
        distinct.len(),
        white as f64 * 100.0 / pixels.len() as f64
    );
    assert!(
        distinct.len() >= 10,
        "blank-looking: {} colours",
        distinct.len()
    );
    assert!(white < pixels.len() * 9 / 10, "mostly white: nothing drawn");
    // Bands (exact fills) and marks (2-6 px lines: a little anti-aliasing tolerance).
    for (what, colour, tolerance, at_least) in [
        ("STABLE band", [200, 230, 201], 2, 20_000),
        ("DEGRADED band (latency spike)", [255, 224, 178], 2, 2_000),
        ("RECONNECTING band (blackhole)", [255, 205, 210], 2, 50),
        ("dead peer mark", [211, 47, 47], 12, 100),
        ("gap mark (the blackhole's)", [255, 111, 0], 12, 200),
        ("rollover mark", [25, 118, 210], 12, 100),
        ("token refresh mark", [121, 85, 72], 12, 100),
        ("delivered bars", [66, 66, 66], 2, 2_000),
    ] {
        let n = count(&pixels, colour, tolerance);
        eprintln!("  {what}: {n} px");
        assert!(
            n >= at_least,
            "{what}: {n} pixels of {colour:?}, expected at least {at_least}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run --plot` writes its SVG at exit (here after SIGTERM), with the STABLE band and one RTT point per
/// answered heartbeat.
#[test]
fn run_writes_its_plot_at_exit() {
    use genesys_keepalive_testkit::{Gateway, GatewayConfig};
    let gw = Gateway::start(GatewayConfig {
        client_id: "plot-client".into(),
        client_secret: "plot-SECRET-5d1".into(),
        ..GatewayConfig::default()
    })
    .expect("gateway");
    let base = gw.base_url();
    let svg = std::env::temp_dir().join(format!("gk-run-plot-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&svg);
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--api-base",
            &base,
            "--login-base",
            &base,
            "--allow-insecure",
        ])
        .args(["--topic", "v2.plot", "--heartbeat-interval-ms", "300"])
        .args(["--stats-interval-ms", "0", "--plot"])
        .arg(&svg)
        .env("GENESYS_CLIENT_ID", "plot-client")
        .env("GENESYS_CLIENT_SECRET", "plot-SECRET-5d1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run starts");
    std::thread::sleep(std::time::Duration::from_secs(4));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("run exits");
    assert!(status.success(), "run exited {status:?}");
    let text = std::fs::read_to_string(&svg).expect("the SVG written at exit");
    let _ = std::fs::remove_file(&svg);
    assert!(text.contains("#C8E6C9"), "the STABLE band");
    let points = text.matches("<circle").count();
    // About 4 s / 300 ms heartbeats; at least a few answered.
    assert!(points >= 5, "{points} RTT points");
}
