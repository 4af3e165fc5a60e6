//! PNG plots of a scenario's rounds, written beside its JSON: per
//! configuration, one bar per server at the median of its rounds with
//! every round as a dot (so the spread is visible), and the latency
//! percentiles the same way. Drawn with `plotters` into a bitmap; text
//! uses DejaVu Sans from the system (Debian's `fonts-dejavu-core`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::prelude::*;

/// Fonts are registered once per process.
static FONT: OnceLock<Result<(), String>> = OnceLock::new();

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn font() -> anyhow::Result<()> {
    FONT.get_or_init(|| {
        let path = FONT_PATHS
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                "no DejaVuSans.ttf (apt-get install fonts-dejavu-core) for the plots' text"
                    .to_owned()
            })?;
        let bytes: &'static [u8] = Box::leak(
            std::fs::read(path)
                .map_err(|e| e.to_string())?
                .into_boxed_slice(),
        );
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a font plotters can read"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One measured value of one server in one configuration and round.
#[derive(Debug, Clone)]
struct Point {
    group: String,
    series: String,
    value: f64,
}

/// What a scenario measured, kept for its plots.
#[derive(Debug, Clone)]
pub struct Plots {
    scenario: String,
    main_unit: String,
    latency_unit: String,
    main: Vec<Point>,
    latency: Vec<Point>,
}

impl Plots {
    /// Plots for `scenario`, whose main figure is in `main_unit` (e.g.
    /// `req/s`) and latencies in `latency_unit` (e.g. `ms`).
    pub fn new(scenario: &str, main_unit: &str, latency_unit: &str) -> Plots {
        Plots {
            scenario: scenario.to_owned(),
            main_unit: main_unit.to_owned(),
            latency_unit: latency_unit.to_owned(),
            main: Vec::new(),
            latency: Vec::new(),
        }
    }

    /// One round of `server` in configuration `group`: its main figure and
    /// its latency percentiles (`("p50", v)`, ...; empty when none).
    pub fn round(&mut self, group: &str, server: &str, main: f64, latency: &[(&str, f64)]) {
        self.main.push(Point {
            group: group.to_owned(),
            series: server.to_owned(),
            value: main,
        });
        for (p, v) in latency {
            self.latency.push(Point {
                group: group.to_owned(),
                series: format!("{server} {p}"),
                value: *v,
            });
        }
    }

    /// Writes `{scenario}.png` (and `{scenario}-latency.png` when there
    /// are latencies) into `dir`; the paths written.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        if !self.main.is_empty() {
            let p = dir.join(format!("{}.png", self.scenario));
            bars(
                &p,
                &format!("{}: {}", self.scenario, self.main_unit),
                &self.main_unit,
                &self.main,
            )?;
            out.push(p);
        }
        if !self.latency.is_empty() {
            let p = dir.join(format!("{}-latency.png", self.scenario));
            bars(
                &p,
                &format!("{}: latency", self.scenario),
                &self.latency_unit,
                &self.latency,
            )?;
            out.push(p);
        }
        Ok(out)
    }

    /// [`Plots::write`], saying where the plots went (or why there are
    /// none: a plot is never worth failing a benchmark run over).
    pub fn write_and_say(&self, dir: &Path) {
        match self.write(dir) {
            Ok(paths) => {
                for p in paths {
                    println!("plot: {}", p.display());
                }
            }
            Err(e) => println!("plot: none ({e:#})"),
        }
    }
}

fn unique(xs: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in xs {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(36, 89, 196),
    RGBColor(196, 38, 46),
    RGBColor(22, 128, 60),
    RGBColor(181, 71, 8),
    RGBColor(122, 60, 196),
    RGBColor(14, 124, 134),
    RGBColor(120, 120, 120),
    RGBColor(200, 160, 0),
];

/// A grouped bar chart: groups along x, one bar per series at its median,
/// each round a dot on its bar.
fn bars(path: &Path, title: &str, unit: &str, points: &[Point]) -> anyhow::Result<()> {
    font()?;
    let groups = unique(points.iter().map(|p| p.group.clone()));
    // strata's series first, so it has the same colour in every plot.
    let mut series = unique(points.iter().map(|p| p.series.clone()));
    series.sort_by_key(|s| !s.starts_with("strata"));
    // Headroom above the tallest bar for the legend, which sits in the
    // upper right corner: one line per series.
    let height = 420 + 12 * series.len() as u32;
    let plot_px = f64::from(height) - 90.0;
    let legend_px = 20.0 * series.len() as f64 + 20.0;
    let max = points
        .iter()
        .map(|p| p.value)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let top = max * 1.05 / (1.0 - (legend_px / plot_px).min(0.7));
    let width = (260 + groups.len() * (60 + 26 * series.len())).clamp(640, 1600) as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let n = groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(2) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < groups.len() {
                groups[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .y_label_formatter(&|y| short(*y))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let slot = 0.8 / series.len().max(1) as f64;
    for (si, s) in series.iter().enumerate() {
        let colour = COLOURS[si % COLOURS.len()];
        let mut rects = Vec::new();
        let mut dots = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            let vals: Vec<f64> = points
                .iter()
                .filter(|p| &p.group == g && &p.series == s)
                .map(|p| p.value)
                .collect();
            if vals.is_empty() {
                continue;
            }
            let x0 = gi as f64 - 0.4 + si as f64 * slot;
            let x1 = x0 + slot * 0.9;
            rects.push(Rectangle::new(
                [(x0, 0.0), (x1, median(vals.clone()))],
                colour.mix(0.75).filled(),
            ));
            for v in vals {
                dots.push(Circle::new(((x0 + x1) / 2.0, v), 3, BLACK.filled()));
            }
        }
        chart
            .draw_series(rects)
            .map_err(|e| anyhow!("{e}"))?
            .label(s.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        chart.draw_series(dots).map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// 12345 -> "12.3k".
fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_a_png_with_every_series() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut p = Plots::new("demo", "ops/s", "us");
        for round in 0..3 {
            for (g, base) in [("100 B", 100.0), ("4 KiB", 80.0)] {
                p.round(
                    g,
                    "strata",
                    base + round as f64,
                    &[("p50", 300.0), ("p99", 900.0)],
                );
                p.round(
                    g,
                    "memcached",
                    base - 5.0,
                    &[("p50", 200.0), ("p99", 3000.0)],
                );
            }
        }
        let paths = p.write(dir.path()).expect("plots");
        assert_eq!(paths.len(), 2);
        for path in paths {
            let bytes = std::fs::read(&path).expect("read");
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
            assert!(
                bytes.len() > 2000,
                "{} is {} bytes",
                path.display(),
                bytes.len()
            );
        }
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(short(12345.0), "12k");
    }
}
