//! The bench's results: report.json, report.svg and the summary table.

use crate::viewer::{Kind, Sample};
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct ViewerResult {
    pub name: String,
    pub kind: Kind,
    /// Seconds after the pass started.
    pub joined_s: f64,
    /// SIGKILLed by churn before the stream ended.
    pub killed: bool,
    pub reached_eos: bool,
    pub rtt_ms: Option<u32>,
    pub last: Sample,
}

/// One second of a pass.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tick {
    pub t_s: f64,
    /// Bytes the origin sent during the pass so far.
    pub origin_bytes: u64,
    /// Bytes the viewers took (CDN and peers) so far, killed viewers included.
    pub viewer_bytes: u64,
    pub viewers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassResult {
    pub kind: Kind,
    pub seconds: f64,
    pub origin_bytes: u64,
    /// Of which media segment bytes (playlists and hash files excluded).
    pub origin_segment_bytes: u64,
    /// Segment requests the origin served, of which resumed part-way (Range from > 0).
    pub segment_requests: usize,
    pub resumed_requests: usize,
    /// Distinct segments requested from the origin.
    pub distinct_segments: usize,
    pub viewers: Vec<ViewerResult>,
    pub ticks: Vec<Tick>,
}

/// Medians over the viewers that played to the end.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Summary {
    pub viewers: usize,
    pub offload: f64,
    pub startup_ms_median: f64,
    pub stalls_total: u64,
    pub starved_s_total: f64,
    pub cpu_s_median: f64,
    pub peak_rss_mb_median: f64,
    pub bytes_cdn_reported: u64,
}

impl PassResult {
    pub fn summary(&self) -> Summary {
        let finished: Vec<&ViewerResult> = self.viewers.iter().filter(|v| v.reached_eos).collect();
        let median = |mut xs: Vec<f64>| -> f64 {
            if xs.is_empty() {
                return 0.0;
            }
            xs.sort_by(f64::total_cmp);
            let n = xs.len();
            if n % 2 == 1 {
                xs[n / 2]
            } else {
                (xs[n / 2 - 1] + xs[n / 2]) / 2.0
            }
        };
        let played: u64 = self.viewers.iter().map(|v| v.last.bytes_played).sum();
        Summary {
            viewers: self.viewers.len(),
            offload: 1.0 - self.origin_bytes as f64 / played.max(1) as f64,
            startup_ms_median: median(
                finished
                    .iter()
                    .filter_map(|v| v.last.first_buffer_ms)
                    .map(|ms| ms as f64)
                    .collect(),
            ),
            stalls_total: self.viewers.iter().map(|v| v.last.stalls).sum(),
            starved_s_total: self
                .viewers
                .iter()
                .map(|v| v.last.starved_ms as f64 / 1000.0)
                .sum(),
            cpu_s_median: median(
                finished
                    .iter()
                    .map(|v| v.last.cpu_ms as f64 / 1000.0)
                    .collect(),
            ),
            peak_rss_mb_median: median(
                finished
                    .iter()
                    .map(|v| v.last.peak_rss_kb as f64 / 1024.0)
                    .collect(),
            ),
            bytes_cdn_reported: self.viewers.iter().map(|v| v.last.bytes_cdn).sum(),
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The per-viewer table and the pass totals, as printed at the end.
pub fn table(pass: &PassResult) -> String {
    let mut out = format!(
        "{:<12} {:>7} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8}\n",
        "viewer",
        "joined",
        "start ms",
        "stalls",
        "starved s",
        "CDN MB",
        "peers MB",
        "up MB",
        "CPU s",
        "RSS MB"
    );
    for v in &pass.viewers {
        let s = &v.last;
        let cdn = if v.kind == Kind::Mesh {
            s.bytes_cdn
        } else {
            s.bytes_played
        };
        out.push_str(&format!(
            "{:<12} {:>6.0}s {:>9} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7.1} {:>8.1}{}\n",
            v.name,
            v.joined_s,
            s.first_buffer_ms.map_or("-".into(), |ms| ms.to_string()),
            s.stalls,
            s.starved_ms as f64 / 1000.0,
            mb(cdn),
            mb(s.bytes_p2p),
            mb(s.bytes_uploaded),
            s.cpu_ms as f64 / 1000.0,
            s.peak_rss_kb as f64 / 1024.0,
            if v.killed {
                "  (killed)"
            } else if !v.reached_eos {
                "  (no EOS)"
            } else {
                ""
            }
        ));
    }
    out
}

/// report.svg: offload over time (left) and bytes per source per viewer of the mesh pass
/// (right).
pub fn chart(path: &Path, mesh: &PassResult, title: &str) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);

    let cumulative: Vec<(f64, f64)> = mesh
        .ticks
        .iter()
        .filter(|t| t.viewer_bytes > 0)
        .map(|t| (t.t_s, 1.0 - t.origin_bytes as f64 / t.viewer_bytes as f64))
        .collect();
    // Offload of each 10 s window: what the cumulative figure hides.
    let windowed: Vec<(f64, f64)> = mesh
        .ticks
        .windows(11)
        .filter_map(|w| {
            let (a, b) = (w[0], w[10]);
            let taken = b.viewer_bytes.checked_sub(a.viewer_bytes)?;
            let sent = b.origin_bytes.saturating_sub(a.origin_bytes);
            (taken > 0).then(|| (b.t_s, 1.0 - sent as f64 / taken as f64))
        })
        .collect();
    let t_max = mesh.ticks.last().map_or(1.0, |t| t.t_s.max(1.0));
    let mut over_time = ChartBuilder::on(&left)
        .caption("offload over time (mesh pass)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..t_max, -0.1..1.0)
        .map_err(|e| e.to_string())?;
    over_time
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("1 - origin bytes / viewer bytes")
        .draw()
        .map_err(|e| e.to_string())?;
    let ceiling = 1.0 - 1.0 / mesh.viewers.len().max(1) as f64;
    for (label, points, color) in [
        ("cumulative", cumulative, BLUE),
        ("last 10 s", windowed, GREEN),
        (
            "ceiling 1 - 1/N",
            vec![(0.0, ceiling), (t_max, ceiling)],
            RED,
        ),
    ] {
        over_time
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    over_time
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;

    let viewers = &mesh.viewers;
    let top = viewers
        .iter()
        .map(|v| mb(v.last.bytes_cdn + v.last.bytes_p2p).max(mb(v.last.bytes_uploaded)))
        .fold(1.0, f64::max);
    let mut per_viewer = ChartBuilder::on(&right)
        .caption(
            "bytes per source per viewer (mesh pass)",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..viewers.len().max(1) as f64 - 0.5, 0.0..top * 1.1)
        .map_err(|e| e.to_string())?;
    per_viewer
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(viewers.len().clamp(1, 20))
        .x_label_formatter(&|x| {
            let at = x.round();
            if (x - at).abs() < 0.05 && at >= 0.0 {
                format!("{}", at as usize + 1)
            } else {
                String::new()
            }
        })
        .x_desc("viewer")
        .y_desc("MB")
        .draw()
        .map_err(|e| e.to_string())?;
    // Stacked CDN + peers, and what the viewer uploaded beside it.
    let bars = |f: &dyn Fn(usize, &ViewerResult) -> (f64, f64, f64)| {
        viewers
            .iter()
            .enumerate()
            .map(|(i, v)| f(i, v))
            .collect::<Vec<_>>()
    };
    let series = [
        (
            "CDN",
            BLUE,
            bars(&|i, v| (i as f64 - 0.4, 0.0, mb(v.last.bytes_cdn))),
        ),
        (
            "peers",
            GREEN,
            bars(&|i, v| {
                let cdn = mb(v.last.bytes_cdn);
                (i as f64 - 0.4, cdn, cdn + mb(v.last.bytes_p2p))
            }),
        ),
        (
            "uploaded",
            RGBColor(230, 140, 0),
            bars(&|i, v| (i as f64 + 0.02, 0.0, mb(v.last.bytes_uploaded))),
        ),
    ];
    for (label, color, rects) in series {
        per_viewer
            .draw_series(
                rects
                    .into_iter()
                    .map(|(x, y0, y1)| Rectangle::new([(x, y0), (x + 0.38, y1)], color.filled())),
            )
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    per_viewer
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
