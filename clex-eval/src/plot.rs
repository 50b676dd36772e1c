//! SVG line charts drawn with `plotters`: the training curve (train loss per step, validation
//! loss per checkpoint) and evaluation curves (perplexity against length, one line per model).
//!
//! Every chart has labelled ticks along both axes with a grid through them, a legend, and
//! log axes where asked. A log axis is drawn as a linear axis over log(value) with ticks
//! chosen and labelled here (powers of two for lengths; 1-2-5 steps for perplexity), since
//! plotters' own log axis places decade ticks only.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::EvalError;

/// steelblue, darkorange, seagreen, crimson, purple, saddlebrown.
const COLORS: [RGBColor; 6] = [
    RGBColor(70, 130, 180),
    RGBColor(255, 140, 0),
    RGBColor(46, 139, 87),
    RGBColor(220, 20, 60),
    RGBColor(128, 0, 128),
    RGBColor(139, 69, 19),
];
const SIZE: (u32, u32) = (800, 480);
/// Ticks an axis aims for.
const TICKS: usize = 8;

/// One named line; `markers` draws dots only (e.g. one per checkpoint), no line.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// Dots instead of a line.
    pub markers: bool,
}

/// How an axis places values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values.
    Linear,
    /// Powers of two evenly spaced, ticks at powers of two (lengths).
    Log2,
    /// Powers of ten evenly spaced, ticks at 1-2-5 steps (perplexity spanning orders).
    Log10,
}

/// An axis: its label and scale.
#[derive(Debug, Clone, Copy)]
pub struct Axis<'a> {
    /// Axis description.
    pub label: &'a str,
    /// Linear or log.
    pub scale: Scale,
}

impl Scale {
    /// The value's position on the drawn (linear) axis; `None` where a log axis has no place.
    fn position_of(self, v: f64) -> Option<f64> {
        let t = match self {
            Scale::Linear => v,
            Scale::Log2 if v > 0.0 => v.log2(),
            Scale::Log10 if v > 0.0 => v.log10(),
            _ => return None,
        };
        t.is_finite().then_some(t)
    }

    /// The value at drawn position `t` (the inverse of [`Scale::position_of`]).
    fn value_at(self, t: f64) -> f64 {
        match self {
            Scale::Linear => t,
            Scale::Log2 => t.exp2(),
            Scale::Log10 => 10f64.powf(t),
        }
    }

    /// Tick positions (on the drawn axis) within `lo..=hi`.
    fn ticks(self, lo: f64, hi: f64) -> Vec<f64> {
        match self {
            Scale::Linear => {
                let step = nice_step((hi - lo) / TICKS as f64);
                let first = (lo / step).ceil() as i64;
                let last = (hi / step).floor() as i64;
                (first..=last).map(|k| k as f64 * step).collect()
            }
            Scale::Log2 => {
                let (first, last) = (lo.ceil() as i64, hi.floor() as i64);
                let every = ((last - first) as usize / TICKS + 1) as i64;
                (first..=last).filter(|e| (e - first) % every == 0).map(|e| e as f64).collect()
            }
            Scale::Log10 => {
                // 1-2-5 per decade, or every digit when the axis spans less than a decade.
                let span = hi - lo;
                let mantissas: &[f64] = if span < 1.0 { &[1., 2., 3., 4., 5., 6., 7., 8., 9.] } else { &[1., 2., 5.] };
                let every = if span > 4.0 { (span / TICKS as f64).ceil() as i64 } else { 1 };
                let mut ticks = Vec::new();
                for decade in (lo.floor() as i64..=hi.ceil() as i64).filter(|d| d.rem_euclid(every) == 0) {
                    for m in if every > 1 { &[1.0][..] } else { mantissas } {
                        let t = decade as f64 + m.log10();
                        if (lo..=hi).contains(&t) {
                            ticks.push(t);
                        }
                    }
                }
                ticks
            }
        }
    }

    /// The tick label of drawn position `t`.
    fn label(self, t: f64, step: f64) -> String {
        let v = self.value_at(t);
        match self {
            // As many decimals as the tick step needs.
            Scale::Linear => format!("{v:.*}", (-step.log10().floor()).max(0.0) as usize),
            Scale::Log2 | Scale::Log10 => {
                if v >= 1.0 {
                    format!("{}", v.round())
                } else {
                    format!("{v:.*}", (-v.log10().floor()).max(0.0) as usize)
                }
            }
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * base).find(|s| *s >= raw * (1.0 - 1e-9)).unwrap_or(10.0 * base)
}

/// A linear drawn axis with ticks (and grid lines) exactly at `ticks`.
struct TickedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.lo) / (self.hi - self.lo);
        limit.0 + ((limit.1 - limit.0) as f64 * fraction).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold grid lines at the ticks; no light lines between them.
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// The drawn range of an axis over `values` (already on the axis), padded by 5% (a single
/// value gets a unit either side).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A corner of the plot where the legend covers no data (upper right first), judged on lines
/// sampled along their segments in a box of 40% × 35% of the plot at each corner; `None`
/// when every corner has data.
fn legend_corner(lines: &[Vec<(f64, f64)>], (x_lo, x_hi): (f64, f64), (y_lo, y_hi): (f64, f64)) -> Option<SeriesLabelPosition> {
    let mut samples = Vec::new();
    for line in lines {
        samples.extend(line.iter().copied());
        for w in line.windows(2) {
            samples.extend((1..16).map(|k| {
                let f = k as f64 / 16.0;
                (w[0].0 + f * (w[1].0 - w[0].0), w[0].1 + f * (w[1].1 - w[0].1))
            }));
        }
    }
    let fractions: Vec<(f64, f64)> = samples.iter().map(|(x, y)| ((x - x_lo) / (x_hi - x_lo), (y - y_lo) / (y_hi - y_lo))).collect();
    let covered = |right: bool, upper: bool| {
        fractions
            .iter()
            .filter(|(fx, fy)| (if right { *fx > 0.6 } else { *fx < 0.4 }) && (if upper { *fy > 0.65 } else { *fy < 0.35 }))
            .count()
    };
    [
        (SeriesLabelPosition::UpperRight, covered(true, true)),
        (SeriesLabelPosition::UpperLeft, covered(false, true)),
        (SeriesLabelPosition::LowerRight, covered(true, false)),
        (SeriesLabelPosition::LowerLeft, covered(false, false)),
    ]
    .into_iter()
    .find_map(|(corner, n)| (n == 0).then_some(corner))
}

/// An SVG chart of `series` with a title, axes as given, a grid through the ticks and a
/// legend. Points a log axis cannot place (≤ 0) and non-finite ones are left out.
pub fn line_chart(title: &str, x: Axis<'_>, y: Axis<'_>, series: &[Series<'_>]) -> Result<String, EvalError> {
    let placed: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().filter_map(|&(px, py)| Some((x.scale.position_of(px)?, y.scale.position_of(py)?))).collect())
        .collect();
    let (x_lo, x_hi) = range(placed.iter().flatten().map(|p| p.0));
    let (y_lo, mut y_hi) = range(placed.iter().flatten().map(|p| p.1));
    // No free corner: raise the top of the plot so the legend sits above the data.
    let corner = legend_corner(&placed, (x_lo, x_hi), (y_lo, y_hi)).unwrap_or_else(|| {
        let legend = ((series.len() as f64 * 17.0 + 24.0) / 360.0).min(0.6);
        y_hi += (y_hi - y_lo) * legend / (1.0 - legend);
        SeriesLabelPosition::UpperRight
    });
    let (x_ticks, y_ticks) = (x.scale.ticks(x_lo, x_hi), y.scale.ticks(y_lo, y_hi));
    let step = |t: &[f64]| t.windows(2).map(|w| w[1] - w[0]).fold(f64::INFINITY, f64::min);
    let (x_step, y_step) = (step(&x_ticks), step(&y_ticks));
    let x_fmt = |t: f64| x.scale.label(t, x_step);
    let y_fmt = |t: f64| y.scale.label(t, y_step);
    let failed = |e: &dyn std::fmt::Display| EvalError::Invalid(format!("drawing the chart `{title}`: {e}"));

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(
                TickedAxis { lo: x_lo, hi: x_hi, ticks: x_ticks.clone() },
                TickedAxis { lo: y_lo, hi: y_hi, ticks: y_ticks.clone() },
            )
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_desc(x.label)
            .y_desc(y.label)
            .bold_line_style(BLACK.mix(0.15))
            // The grid marks the ticks; the axes are the frame and the tick labels drawn below.
            // plotters draws axis lines and tick marks as <polyline>s, which would mix with the
            // data lines, and drops the tick labels with the axes.
            .disable_axes()
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(|e| failed(&e))?;
        chart.plotting_area().draw(&Rectangle::new([(x_lo, y_lo), (x_hi, y_hi)], BLACK.stroke_width(1))).map_err(|e| failed(&e))?;
        let tick_font = ("sans-serif", 13).into_font();
        for &t in &x_ticks {
            let (px, py) = chart.backend_coord(&(t, y_lo));
            let style = tick_font.clone().into_text_style(&root).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(x_fmt(t), (px, py + 6), style)).map_err(|e| failed(&e))?;
        }
        for &t in &y_ticks {
            let (px, py) = chart.backend_coord(&(x_lo, t));
            let style = tick_font.clone().into_text_style(&root).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(y_fmt(t), (px - 6, py), style)).map_err(|e| failed(&e))?;
        }
        for (i, (s, points)) in series.iter().zip(placed).enumerate() {
            let color = COLORS[i % COLORS.len()];
            let drawn = if s.markers {
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            } else {
                // Dots at the measured points, unless they are too many to tell apart.
                let dots = if points.len() <= 32 { 3 } else { 0 };
                chart.draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(dots))
            };
            // A square in the legend, so each line is one <polyline> in the file.
            drawn
                .map_err(|e| failed(&e))?
                .label(s.name)
                .legend(move |(lx, ly)| Rectangle::new([(lx, ly - 5), (lx + 14, ly + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}

/// The training curve of the run `run_name`: train loss per step and, per named validation
/// series (e.g. at L and 4L), the loss at each checkpoint.
pub fn loss_svg(train: &[(usize, f64)], valid: &[(String, Vec<(usize, f64)>)], run_name: &str) -> Result<String, EvalError> {
    let as_f = |v: &[(usize, f64)]| v.iter().map(|(s, l)| (*s as f64, *l)).collect();
    let mut series = vec![Series { name: "train loss", points: as_f(train), markers: false }];
    series.extend(valid.iter().map(|(name, points)| Series { name, points: as_f(points), markers: true }));
    line_chart(
        &format!("{run_name}: loss per step"),
        Axis { label: "step", scale: Scale::Linear },
        Axis { label: "loss (nats per token)", scale: Scale::Linear },
        &series,
    )
}

/// Perplexity against evaluation length, one line per model: a log2 length axis, and a log
/// perplexity axis when the values span more than a factor of 3.
pub fn perplexity_svg(title: &str, curves: &[Series<'_>]) -> Result<String, EvalError> {
    let ys = curves.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite() && *y > 0.0);
    let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let scale = if hi > 3.0 * lo { Scale::Log10 } else { Scale::Linear };
    let label = if scale == Scale::Log10 { "perplexity (log scale)" } else { "perplexity" };
    line_chart(title, Axis { label: "evaluation length (tokens, log scale)", scale: Scale::Log2 }, Axis { label, scale }, curves)
}

/// A CLEX model's learned frequency trajectories: for each `(i, ratios)` in `curves`,
/// θ_i(t) / θ_i(1) at `t_values` (how far the model scales frequency i from RoPE's at t),
/// on a linear t axis and a log ratio axis, one line per frequency index.
pub fn theta_svg(model_name: &str, t_values: &[f64], curves: &[(usize, Vec<f64>)]) -> Result<String, EvalError> {
    if let Some((i, ratios)) = curves.iter().find(|(_, r)| r.len() != t_values.len()) {
        return Err(EvalError::Invalid(format!("θ_{i}: {} ratios for {} values of t", ratios.len(), t_values.len())));
    }
    let names: Vec<String> = curves.iter().map(|(i, _)| format!("θ_i, i = {i}")).collect();
    let series: Vec<Series<'_>> = curves
        .iter()
        .zip(&names)
        .map(|((_, ratios), name)| Series { name, points: t_values.iter().copied().zip(ratios.iter().copied()).collect(), markers: false })
        .collect();
    line_chart(
        &format!("{model_name}: CLEX frequencies relative to RoPE"),
        Axis { label: "t (scaling factor: context up to t·P tokens)", scale: Scale::Linear },
        Axis { label: "θ_i(t) / θ_i(1) (log scale)", scale: Scale::Log10 },
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `<text>` contents of an SVG, in order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string())).collect()
    }

    #[test]
    fn length_axis_is_labelled_at_every_power_of_two() {
        let a = Series { name: "CLEX", points: vec![(128.0, 30.0), (256.0, 28.0), (512.0, 29.0), (1024.0, 31.0)], markers: false };
        let b = Series { name: "RoPE", points: vec![(128.0, 30.0), (256.0, 90.0), (512.0, 400.0), (1024.0, 900.0)], markers: false };
        let svg = perplexity_svg("ppl <vs> length", &[a, b]).unwrap();
        let t = texts(&svg);
        for want in ["128", "256", "512", "1024", "CLEX", "RoPE", "ppl &lt;vs&gt; length", "perplexity (log scale)"] {
            assert!(t.iter().any(|x| x == want), "no label {want} in {t:?}");
        }
        // A log perplexity axis with ticks between the extremes (30 .. 900: 50, 100, 200, 500).
        for want in ["50", "100", "200", "500"] {
            assert!(t.iter().any(|x| x == want), "no y tick {want} in {t:?}");
        }
        assert_eq!(svg.matches("<polyline").count(), 2, "one polyline per line series");
    }

    #[test]
    fn loss_chart_has_numbered_step_ticks_grid_and_legend() {
        let train: Vec<(usize, f64)> = (0..=400).map(|s| (s, 7.0 - s as f64 / 100.0)).collect();
        let valid = vec![("validation loss at 256".to_string(), vec![(100, 6.2), (200, 5.3), (400, 3.4)])];
        let svg = loss_svg(&train, &valid, "tiny-clex").unwrap();
        let t = texts(&svg);
        for want in ["0", "100", "200", "300", "400", "tiny-clex: loss per step", "train loss", "validation loss at 256", "step"] {
            assert!(t.iter().any(|x| x == want), "no label {want} in {t:?}");
        }
        // Loss ticks between the extremes (3 .. 7).
        for want in ["4", "5", "6"] {
            assert!(t.iter().any(|x| x == want), "no y tick {want} in {t:?}");
        }
        assert_eq!(svg.matches("<circle").count(), 3, "one marker per checkpoint, none on the 401 train steps");
        // A grid line through each tick: steps 0..400 by 100, loss 3..7 by 1.
        assert_eq!(svg.matches("<line").count(), 10);
        assert_eq!(svg.matches("<polyline").count(), 1, "the train loss");
    }

    #[test]
    fn theta_chart_has_one_line_per_frequency_on_a_log_ratio_axis() {
        // NTK-like trajectories α^(−2i/(d−2)), α = 2t − 1, d = 16: ratios 1 .. 1/15 at t = 8.
        let t: Vec<f64> = (0..=28).map(|k| 1.0 + 0.25 * k as f64).collect();
        let curves: Vec<(usize, Vec<f64>)> =
            [0usize, 2, 4, 7].iter().map(|&i| (i, t.iter().map(|t| (2.0 * t - 1.0).powf(-((2 * i) as f64) / 14.0)).collect())).collect();
        let svg = theta_svg("tiny-clex", &t, &curves).unwrap();
        let texts = texts(&svg);
        for want in ["tiny-clex: CLEX frequencies relative to RoPE", "θ_i, i = 0", "θ_i, i = 2", "θ_i, i = 4", "θ_i, i = 7"] {
            assert!(texts.iter().any(|x| x == want), "no label {want} in {texts:?}");
        }
        // t ticks 1..8, and 1-2-5 ratio ticks between 1/15 and 1.
        for want in ["1", "2", "4", "6", "8", "0.1", "0.2", "0.5"] {
            assert!(texts.iter().any(|x| x == want), "no tick {want} in {texts:?}");
        }
        assert_eq!(svg.matches("<polyline").count(), 4, "one polyline per frequency");
        assert!(theta_svg("x", &t, &[(0, vec![1.0; 3])]).is_err(), "ratios must match t");
    }

    #[test]
    fn ticks_are_nice_numbers_inside_the_range() {
        assert_eq!(Scale::Linear.ticks(0.0, 400.0), vec![0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0]);
        assert_eq!(Scale::Log2.ticks(6.9, 10.1), vec![7.0, 8.0, 9.0, 10.0]);
        let labels: Vec<String> = Scale::Log10.ticks(1.0, 2.5).iter().map(|t| Scale::Log10.label(*t, 0.0)).collect();
        assert_eq!(labels, ["10", "20", "50", "100", "200"]);
        assert_eq!(Scale::Linear.label(3.5, 0.5), "3.5");
        assert_eq!(nice_step(0.37), 0.5);
    }
}
