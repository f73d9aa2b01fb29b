//! What the benchmark tools print: percentiles of measured latencies.

use std::time::Duration;

/// Prints count, p50, p90, p99, p99.9 and max of `samples` under `name`.
pub fn latencies(name: &str, samples: &[Duration]) {
    if samples.is_empty() {
        println!("{name}: no samples");
        return;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms p99.9={:.2} ms max={:.2} ms",
        sorted.len(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(sorted[sorted.len() - 1]),
    );
}
