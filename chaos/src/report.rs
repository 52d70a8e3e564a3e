//! The report of a run: `results.json` and two plots, `latency.png` and
//! `throughput.png`, over the run's time, with each fault's active period
//! shaded in its kind's colour.
//!
//! The plots carry no text (the PNG writer has no font); their legend is
//! in `results.json` under `plot_legend` and in docs/chaos.md:
//! - x: time, a tick every 10 s; latency y: log scale, a tick at every
//!   power of ten from 1 ms to 10 s; throughput y: operations completed
//!   per second, a tick every 10;
//! - points and lines: ok green, info orange, fail red;
//! - shading: kill red, pause yellow, partition blue, clock purple, disk grey, membership teal.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::history::{F, Op, OpType};
use crate::nemesis::{Kind, Period};
use crate::png::{Canvas, Rgb};

const WIDTH: usize = 1200;
const HEIGHT: usize = 420;
const LEFT: i64 = 50;
const RIGHT: i64 = 20;
const TOP: i64 = 20;
const BOTTOM: i64 = 40;

const OK: Rgb = [30, 150, 50];
const INFO: Rgb = [240, 140, 0];
const FAIL: Rgb = [210, 30, 30];

fn shade(kind: Kind) -> Rgb {
    match kind {
        Kind::Kill => [255, 120, 120],
        Kind::Pause => [250, 220, 80],
        Kind::Partition => [120, 160, 255],
        Kind::Clock => [190, 120, 230],
        Kind::Disk => [150, 150, 150],
        Kind::Membership => [110, 210, 200],
        Kind::Full => [200, 160, 110],
    }
}

/// What the plots' colours and axes mean (for results.json).
pub fn legend() -> Value {
    json!({
        "x": "time since the run started, one tick per 10 s",
        "latency.png y": "latency of completed operations, log scale, ticks at 1 ms, 10 ms, 100 ms, 1 s, 10 s",
        "throughput.png y": "operations completed per second, one tick per 10",
        "points and lines": {"ok": "green", "info": "orange", "fail": "red"},
        "shaded periods": {"kill": "red", "pause": "yellow", "partition": "blue", "clock": "purple", "disk": "grey", "membership": "teal", "full": "brown"},
    })
}

struct Frame {
    canvas: Canvas,
    duration_ns: u64,
}

impl Frame {
    fn new(duration_ns: u64, periods: &[Period]) -> Frame {
        let mut canvas = Canvas::new(WIDTH, HEIGHT, [255, 255, 255]);
        let mut frame = Frame { canvas: Canvas::new(1, 1, [0, 0, 0]), duration_ns: duration_ns.max(1) };
        for period in periods {
            let (x0, x1) = (frame.x(period.start_ns), frame.x(period.stop_ns).max(frame.x(period.start_ns) + 1));
            canvas.fill(x0, TOP, x1, HEIGHT as i64 - BOTTOM, shade(period.kind), 0.35);
        }
        let (x_end, y_end) = (WIDTH as i64 - RIGHT, HEIGHT as i64 - BOTTOM);
        canvas.line((LEFT, y_end), (x_end, y_end), [0, 0, 0]);
        canvas.line((LEFT, TOP), (LEFT, y_end), [0, 0, 0]);
        let mut t = 0;
        while t <= duration_ns {
            let x = frame.x(t);
            canvas.line((x, y_end), (x, y_end + 6), [0, 0, 0]);
            t += 10_000_000_000;
        }
        frame.canvas = canvas;
        frame
    }

    fn x(&self, t_ns: u64) -> i64 {
        let span = (WIDTH as i64 - LEFT - RIGHT) as f64;
        LEFT + (t_ns as f64 / self.duration_ns as f64 * span) as i64
    }

    fn y_tick(&mut self, y: i64) {
        self.canvas.line((LEFT - 6, y), (LEFT, y), [0, 0, 0]);
        for x in (LEFT..WIDTH as i64 - RIGHT).step_by(4) {
            self.canvas.set(x, y, [220, 220, 220]);
        }
    }
}

/// Latency of every completed client operation over time.
fn latency_plot(pairs: &[(&Op, &Op)], duration_ns: u64, periods: &[Period]) -> Canvas {
    let mut frame = Frame::new(duration_ns, periods);
    let plot_height = (HEIGHT as i64 - TOP - BOTTOM) as f64;
    // log10 of ms, from 0.1 ms to 100 s.
    let (lo, hi) = (-1.0f64, 5.0f64);
    let y = |ms: f64| -> i64 {
        let v = ms.max(0.1).log10().clamp(lo, hi);
        HEIGHT as i64 - BOTTOM - ((v - lo) / (hi - lo) * plot_height) as i64
    };
    for decade in 0..=4 {
        frame.y_tick(y(10f64.powi(decade)));
    }
    // Info and fail last, so they stay visible over the many ok points.
    for wanted in [OpType::Ok, OpType::Info, OpType::Fail] {
        let color = match wanted {
            OpType::Ok => OK,
            OpType::Info => INFO,
            _ => FAIL,
        };
        for (invoke, done) in pairs.iter().filter(|(_, d)| d.op_type == wanted) {
            let ms = (done.time_ns.saturating_sub(invoke.time_ns)) as f64 / 1e6;
            let x = frame.x(invoke.time_ns);
            frame.canvas.dot(x, y(ms), 1, color);
        }
    }
    frame.canvas
}

/// Operations completed per second, by completion type.
fn throughput_plot(pairs: &[(&Op, &Op)], duration_ns: u64, periods: &[Period]) -> Canvas {
    let mut frame = Frame::new(duration_ns, periods);
    let n_buckets = (duration_ns / 1_000_000_000 + 1) as usize;
    let mut counts: HashMap<OpType, Vec<u64>> = HashMap::new();
    for (_, done) in pairs {
        let bucket = ((done.time_ns / 1_000_000_000) as usize).min(n_buckets - 1);
        counts.entry(done.op_type).or_insert_with(|| vec![0; n_buckets])[bucket] += 1;
    }
    let max = counts.values().flatten().copied().max().unwrap_or(1).max(10) as f64;
    let plot_height = (HEIGHT as i64 - TOP - BOTTOM) as f64;
    let y = |n: u64| HEIGHT as i64 - BOTTOM - (n as f64 / max * plot_height) as i64;
    let mut tick = 0;
    while (tick as f64) <= max {
        frame.y_tick(y(tick));
        tick += if max > 500.0 { 100 } else { 10 };
    }
    for (op_type, color) in [(OpType::Ok, OK), (OpType::Info, INFO), (OpType::Fail, FAIL)] {
        let Some(series) = counts.get(&op_type) else { continue };
        let mut prev = None;
        for (i, n) in series.iter().enumerate() {
            let point = (frame.x(i as u64 * 1_000_000_000 + 500_000_000), y(*n));
            if let Some(p) = prev {
                frame.canvas.line(p, point, color);
            }
            prev = Some(point);
        }
    }
    frame.canvas
}

/// Writes the plots of `history` into `dir`.
pub fn write_plots(dir: &Path, history: &[Op], periods: &[Period]) -> anyhow::Result<()> {
    // Client operations only: pair each completion with its invoke.
    let mut open: HashMap<i64, &Op> = HashMap::new();
    let mut pairs = Vec::new();
    for op in history.iter().filter(|o| matches!(o.f, F::Send | F::Poll | F::Commit)) {
        if op.op_type == OpType::Invoke {
            open.insert(op.process, op);
        } else if let Some(invoke) = open.remove(&op.process) {
            pairs.push((invoke, op));
        }
    }
    // The plots cover the workload and the faults, not the final read.
    let last_op = pairs.iter().map(|(_, done)| done.time_ns).max().unwrap_or(1);
    let duration_ns = periods.iter().map(|p| p.stop_ns).fold(last_op, u64::max);
    let latency = latency_plot(&pairs, duration_ns, periods);
    std::fs::write(dir.join("latency.png"), latency.to_png()).context("write latency.png")?;
    let throughput = throughput_plot(&pairs, duration_ns, periods);
    std::fs::write(dir.join("throughput.png"), throughput.to_png()).context("write throughput.png")?;
    Ok(())
}
