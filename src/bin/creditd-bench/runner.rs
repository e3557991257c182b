//! The closed loop: `concurrency` tasks each call the operation back to back until the
//! deadline; calls that start after the warm-up and before the deadline are measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// One call of a scenario. `worker` is the task's index (0..concurrency) and `seq` counts that
/// task's calls, so together they are unique within a run.
pub trait Op: Send + Sync + 'static {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>>;
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latencies of the successful measured calls, sorted, in nanoseconds.
    pub latencies: Vec<u64>,
    pub duration: Duration,
}

impl Sample {
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.duration.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The `q`-quantile (nearest rank), in microseconds.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        Some(self.latencies[rank - 1] as f64 / 1000.0)
    }

    pub fn max_us(&self) -> Option<f64> {
        self.latencies.last().map(|&nanos| nanos as f64 / 1000.0)
    }

    pub fn mean_us(&self) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let total: u128 = self.latencies.iter().map(|&n| u128::from(n)).sum();
        Some(total as f64 / self.latencies.len() as f64 / 1000.0)
    }
}

struct WorkerResult {
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u64>,
}

/// Runs `op` from `concurrency` tasks for `warmup + duration`.
pub async fn run(
    op: Arc<dyn Op>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Sample {
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = WorkerResult {
                errors: 0,
                first_error: None,
                latencies: Vec::with_capacity(4096),
            };
            let mut seq = 0;
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let outcome = op.call(worker, seq).await;
                let nanos = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                seq += 1;
                if started < measure_from {
                    continue;
                }
                match outcome {
                    Ok(()) => result.latencies.push(nanos),
                    Err(error) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(error);
                    }
                }
            }
            result
        }));
    }
    let mut sample = Sample {
        ops: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        duration,
    };
    for task in tasks {
        match task.await {
            Ok(result) => {
                sample.errors += result.errors;
                if sample.first_error.is_none() {
                    sample.first_error = result.first_error;
                }
                sample.latencies.extend(result.latencies);
            }
            Err(error) => {
                sample.errors += 1;
                sample
                    .first_error
                    .get_or_insert_with(|| format!("worker panicked: {error}"));
            }
        }
    }
    sample.latencies.sort_unstable();
    sample.ops = sample.latencies.len() as u64;
    sample
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s or m)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let sample = Sample {
            ops: 100,
            errors: 0,
            first_error: None,
            latencies: (1..=100).map(|n| n * 1000).collect(),
            duration: Duration::from_secs(1),
        };
        assert_eq!(sample.quantile_us(0.5), Some(50.0));
        assert_eq!(sample.quantile_us(0.99), Some(99.0));
        assert_eq!(sample.max_us(), Some(100.0));
    }
}
