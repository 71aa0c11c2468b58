//! `--plot FILE.svg`: a picture of a connection's story (for `run` and `demo`) or of a benchmark's
//! distributions (`bench`), drawn with `plotters`' SVG backend. Text is written as SVG `<text>` elements (no
//! font files are read: plotters is built without its font features), so a browser renders it with its own
//! fonts.
//!
//! The story: the RTT of every answered heartbeat over time, on coloured bands for the state (STABLE green,
//! DEGRADED orange, RECONNECTING red, CONNECTING and STOPPED grey), vertical marks for dead peers (red,
//! wide), gap reports (orange, widest and tallest, drawn under the others), reconnects (purple), rollovers
//! (blue) and token refreshes (brown), thin grey labelled lines for
//! scripted faults (the demo's), and below it the notifications delivered per second.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use genesys_keepalive::{AuditEvent, Histogram, State};
use genesys_keepalive_driver_common::{Handle, Report, TryRecvError};
use plotters::prelude::*;

use crate::failure::Failure;

/// The band colour of each state (opaque, so that a rendering shows exactly these).
pub fn band_colour(s: State) -> RGBColor {
    match s {
        State::Stable => RGBColor(200, 230, 201),
        State::Degraded => RGBColor(255, 224, 178),
        State::Reconnecting => RGBColor(255, 205, 210),
        State::Connecting => RGBColor(224, 224, 224),
        State::Stopped => RGBColor(189, 189, 189),
    }
}

/// What a vertical mark is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A peer declared dead.
    DeadPeer,
    /// A reconnect scheduled.
    Reconnect,
    /// A rollover completed.
    Rollover,
    /// A token obtained.
    TokenRefresh,
    /// A gap reported (notifications may have been missed), at the moment it was reported.
    Gap,
}

impl Mark {
    const ALL: [Mark; 5] = [
        Mark::Gap,
        Mark::DeadPeer,
        Mark::Reconnect,
        Mark::Rollover,
        Mark::TokenRefresh,
    ];

    fn colour(self) -> RGBColor {
        match self {
            Mark::DeadPeer => RGBColor(211, 47, 47),
            Mark::Reconnect => RGBColor(123, 31, 162),
            Mark::Rollover => RGBColor(25, 118, 210),
            Mark::TokenRefresh => RGBColor(121, 85, 72),
            Mark::Gap => RGBColor(255, 111, 0),
        }
    }

    /// How high its line goes (a share of the chart) and how wide: marks at the same moment stay visible.
    fn shape(self) -> (f64, u32) {
        match self {
            Mark::DeadPeer => (0.88, 6),
            Mark::Reconnect => (0.74, 2),
            Mark::Rollover => (0.82, 3),
            Mark::TokenRefresh => (0.66, 3),
            Mark::Gap => (0.95, 10),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mark::DeadPeer => "dead peer",
            Mark::Reconnect => "reconnect",
            Mark::Rollover => "rollover",
            Mark::TokenRefresh => "token refresh",
            Mark::Gap => "gap reported",
        }
    }
}

/// A connection's story as the CLI saw it, in seconds since `start`.
pub struct Story {
    start: Instant,
    /// (t, RTT ms) per answered heartbeat.
    rtts: Vec<(f64, f64)>,
    /// (t, state entered); the first is the state at `start`.
    states: Vec<(f64, State)>,
    marks: Vec<(f64, Mark)>,
    /// Notifications delivered in each second.
    per_second: Vec<u32>,
    /// (t, label): scripted faults (the demo's).
    notes: Vec<(f64, String)>,
    acked: u64,
}

impl Story {
    /// An empty story starting now, in `state`.
    pub fn new(start: Instant, state: State) -> Self {
        Story {
            start,
            rtts: Vec::new(),
            states: vec![(0.0, state)],
            marks: Vec::new(),
            per_second: Vec::new(),
            notes: Vec::new(),
            acked: 0,
        }
    }

    fn t(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// The state became `s` (if it is not already).
    pub fn state(&mut self, at: Instant, s: State) {
        if self.states.last().map(|(_, last)| *last) != Some(s) {
            let t = self.t(at);
            self.states.push((t, s));
        }
    }

    /// Takes in one report: a state change (a band) or an audit entry worth a mark.
    pub fn report(&mut self, at: Instant, report: &Report) {
        let t = self.t(at);
        match report {
            Report::State { to, .. } => self.states.push((t, *to)),
            Report::Audit(e) => {
                let mark = match e.event {
                    AuditEvent::DeadPeer => Mark::DeadPeer,
                    AuditEvent::ReconnectScheduled => Mark::Reconnect,
                    AuditEvent::RolloverComplete => Mark::Rollover,
                    AuditEvent::TokenRefreshed => Mark::TokenRefresh,
                    _ => return,
                };
                self.marks.push((t, mark));
            }
            Report::Gap(_) => self.marks.push((t, Mark::Gap)),
            Report::Alert(_) | Report::Stopped(_) => {}
        }
    }

    /// Counts one notification delivered.
    pub fn delivered(&mut self, at: Instant) {
        let s = self.t(at) as usize;
        if self.per_second.len() <= s {
            self.per_second.resize(s + 1, 0);
        }
        if let Some(c) = self.per_second.get_mut(s) {
            *c += 1;
        }
    }

    /// Records the RTT of a heartbeat answered since the last call (sample often: more than one answered
    /// in between shows as one).
    pub fn sample(&mut self, at: Instant, acked: u64, last_rtt: Option<Duration>) {
        if acked > self.acked {
            self.acked = acked;
            if let Some(rtt) = last_rtt {
                let t = self.t(at);
                self.rtts.push((t, rtt.as_secs_f64() * 1000.0));
            }
        }
    }

    /// A labelled thin line at `at` (the demo's scripted faults).
    pub fn note(&mut self, at: Instant, label: impl Into<String>) {
        let t = self.t(at);
        self.notes.push((t, label.into()));
    }

    /// Draws the story into an SVG at `path`, ending `end` (seconds since start).
    pub fn write_svg(&self, path: &Path, title: &str, end: Instant) -> Result<(), String> {
        let end = self.t(end).max(1.0);
        let root = SVGBackend::new(path, (1200, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(500);
        self.draw_rtt(&top, title, end).map_err(err)?;
        self.draw_deliveries(&bottom, end).map_err(err)?;
        root.present().map_err(err)
    }

    fn draw_rtt<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        title: &str,
        end: f64,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let max = self.rtts.iter().map(|(_, r)| *r).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..max)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("seconds")
            .y_desc("RTT (ms)")
            .draw()?;
        // Bands: each state from its start to the next state's (or the end).
        for (i, (t0, state)) in self.states.iter().enumerate() {
            let t1 = self.states.get(i + 1).map_or(end, |(t, _)| *t);
            if t1 > *t0 {
                let rect = Rectangle::new([(*t0, 0.0), (t1, max)], band_colour(*state).filled());
                chart.draw_series(std::iter::once(rect))?;
            }
        }
        for state in [State::Stable, State::Degraded, State::Reconnecting] {
            let c = band_colour(state);
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
                .label(state.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        }
        for (i, (t, label)) in self.notes.iter().enumerate() {
            let grey = RGBColor(97, 97, 97);
            // Alternate heights, so that notes close in time do not overwrite each other.
            let y = max * if i % 2 == 0 { 0.97 } else { 0.93 };
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(*t, max * 0.9), (*t, max)],
                grey.stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                label.clone(),
                (*t, y),
                ("sans-serif", 12).into_font().color(&grey),
            )))?;
        }
        for kind in Mark::ALL {
            let c = kind.colour();
            let (height, width) = kind.shape();
            let lines = self.marks.iter().filter(|(_, m)| *m == kind).map(|(t, _)| {
                PathElement::new(vec![(*t, 0.0), (*t, max * height)], c.stroke_width(width))
            });
            chart
                .draw_series(lines)?
                .label(kind.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2))
                });
        }
        let line = RGBColor(33, 33, 33);
        chart
            .draw_series(LineSeries::new(
                self.rtts.iter().copied(),
                line.stroke_width(1),
            ))?
            .label("RTT per heartbeat")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], line));
        chart.draw_series(self.rtts.iter().map(|&p| Circle::new(p, 2, line.filled())))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }

    fn draw_deliveries<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        end: f64,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let max = self.per_second.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.15;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..max)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("seconds")
            .y_desc("delivered / s")
            .draw()?;
        let bar = RGBColor(66, 66, 66);
        chart.draw_series(self.per_second.iter().enumerate().map(|(s, &n)| {
            let s = s as f64;
            Rectangle::new([(s + 0.05, 0.0), (s + 0.95, f64::from(n))], bar.filled())
        }))?;
        Ok(())
    }
}

/// `run --plot`: samples a connection from a thread of its own (any driver: it reads only the [`Handle`]),
/// every 50 ms: the last RTT when a heartbeat was answered, notifications delivered (from the counter), and
/// every report (state bands and marks) through its own receiver.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Story>>,
    path: PathBuf,
}

impl Recorder {
    /// Starts sampling `handle` into a story that began at `start`, for `path`.
    pub fn start(handle: Handle, start: Instant, path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut story = Story::new(start, State::Connecting);
            story.state(Instant::now(), handle.state());
            let mut reports = handle.reports();
            let mut delivered = 0u64;
            loop {
                let last = flag.load(Ordering::Relaxed);
                loop {
                    match reports.try_recv() {
                        Ok(r) => story.report(Instant::now(), &r),
                        Err(TryRecvError::Lagged(_)) => continue,
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                let stats = handle.stats();
                let now = Instant::now();
                for _ in delivered..stats.notifications_delivered {
                    story.delivered(now);
                }
                delivered = delivered.max(stats.notifications_delivered);
                story.sample(now, stats.heartbeats_acked, handle.last_rtt());
                if last {
                    return story;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Recorder {
            stop,
            thread: Some(thread),
            path,
        }
    }

    /// Stops sampling and writes the SVG (exit 1 if it cannot be written).
    pub fn finish(mut self, title: &str) -> Result<(), Failure> {
        self.stop.store(true, Ordering::Relaxed);
        let story = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .ok_or_else(|| Failure::internal("the plot sampler panicked"))?;
        story
            .write_svg(&self.path, title, Instant::now())
            .map_err(|e| Failure::internal(format!("cannot write {}: {e}", self.path.display())))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// `bench --plot`: the RTT and lateness distributions over every connection, one bar per core histogram
/// bucket (half-octave), as a share of the samples.
pub fn write_distributions(
    path: &Path,
    title: &str,
    rtt: &Histogram,
    lateness: &Histogram,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(360);
    draw_histogram(
        &top,
        &format!("{title}: heartbeat RTT"),
        rtt,
        RGBColor(21, 101, 192),
    )
    .map_err(err)?;
    draw_histogram(
        &bottom,
        &format!("{title}: heartbeat schedule lateness"),
        lateness,
        RGBColor(230, 81, 0),
    )
    .map_err(err)?;
    root.present().map_err(err)
}

fn draw_histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    h: &Histogram,
    colour: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let buckets: Vec<(Option<Duration>, u64)> = h.buckets().collect();
    let total = h.count().max(1) as f64;
    let n = buckets.len();
    let highest = buckets.iter().map(|(_, c)| *c).max().unwrap_or(0) as f64 * 100.0 / total;
    let top = (highest * 1.15).clamp(1.0, 100.0);
    let label = |i: usize| match buckets.get(i).map(|(b, _)| *b) {
        Some(Some(b)) => format!("≤{}", short(b)),
        Some(None) => "more".to_owned(),
        None => String::new(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{title} ({} samples)", h.count()),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(16)
        .x_label_formatter(&|x| label(*x as usize))
        .y_desc("% of samples")
        .draw()?;
    chart.draw_series(buckets.iter().enumerate().map(|(i, (_, c))| {
        let x = i as f64;
        Rectangle::new(
            [(x + 0.1, 0.0), (x + 0.9, *c as f64 * 100.0 / total)],
            colour.filled(),
        )
    }))?;
    Ok(())
}

fn short(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn story_keeps_bands_marks_rtts_and_deliveries() {
        let start = Instant::now();
        let mut s = Story::new(start, State::Connecting);
        let at = |ms| start + Duration::from_millis(ms);
        s.report(
            at(100),
            &Report::State {
                from: State::Connecting,
                to: State::Stable,
            },
        );
        s.sample(at(600), 1, Some(Duration::from_millis(3)));
        s.sample(at(700), 1, Some(Duration::from_millis(3)));
        s.sample(at(1100), 2, Some(Duration::from_millis(5)));
        s.delivered(at(1500));
        s.delivered(at(1600));
        s.delivered(at(2100));
        assert_eq!(s.rtts, vec![(0.6, 3.0), (1.1, 5.0)]);
        assert_eq!(s.per_second, vec![0, 2, 1]);
        assert_eq!(s.states.len(), 2);
        let path = std::env::temp_dir().join(format!("gk-plot-unit-{}.svg", std::process::id()));
        s.write_svg(&path, "unit", at(3000)).expect("svg written");
        let svg = std::fs::read_to_string(&path).expect("svg");
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(
            svg.contains("#C8E6C9") || svg.contains("#c8e6c9"),
            "the STABLE band colour"
        );
        assert!(svg.contains("<text"), "text as SVG text elements");
    }
}
