//! The loops. Closed (the default): `concurrency` tasks each call the operation back to back
//! until the deadline; calls that start after the warm-up and before the deadline are measured.
//! Fixed count (`--requests N`): the same closed loop, stopping after N measured calls. Open
//! (`--rate R`): call `i` is scheduled at `start + i / R`; the `concurrency` tasks take the
//! scheduled calls in order, and each call's latency counts from its *scheduled* time, so a
//! stall shows in the percentiles instead of silently slowing the schedule (coordinated
//! omission).
//!
//! Around the measured interval (not the warm-up) the runner reads the CPU time of the server
//! process and of this process from `/proc/<pid>/stat`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// One call of a scenario. `worker` is the task's index (0..concurrency) and `seq` counts that
/// task's calls, so together they are unique within a run.
pub trait Op: Send + Sync + 'static {
    fn call(&self, worker: usize, seq: u64) -> BoxFuture<'_, Result<(), String>>;
}

/// How calls are issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Back to back from every task for `duration` after `warmup`.
    Closed,
    /// Back to back from every task until `requests` measured calls have been made.
    Count { requests: u64 },
    /// `rate` calls per second on a fixed schedule.
    Open { rate: f64 },
}

impl Load {
    pub fn name(&self) -> &'static str {
        match self {
            Load::Closed => "closed",
            Load::Count { .. } => "count",
            Load::Open { .. } => "open",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Sample {
    pub load: Load,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latencies of the successful measured calls, sorted, in nanoseconds (open loop: from the
    /// scheduled send time).
    pub latencies: Vec<u64>,
    pub duration: Duration,
    /// Open loop: measured calls a task took up only after their scheduled time (every task
    /// was still busy), and the largest such lag.
    pub behind: u64,
    pub max_lag: Duration,
    /// CPU time (user + system) of the server process during the measured interval.
    pub server_cpu: Option<Duration>,
    /// CPU time of the load generator's process during the measured interval.
    pub bench_cpu: Option<Duration>,
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

    /// Server CPU per successful call, in microseconds.
    pub fn server_cpu_us_per_op(&self) -> Option<f64> {
        per_op(self.server_cpu, self.ops)
    }

    /// Load generator CPU per successful call, in microseconds.
    pub fn bench_cpu_us_per_op(&self) -> Option<f64> {
        per_op(self.bench_cpu, self.ops)
    }
}

fn per_op(cpu: Option<Duration>, ops: u64) -> Option<f64> {
    match cpu {
        Some(cpu) if ops > 0 => Some(cpu.as_secs_f64() * 1e6 / ops as f64),
        _ => None,
    }
}

/// Reads process CPU time from `/proc/<pid>/stat` (`utime + stime`, fields 14 and 15).
#[derive(Debug, Clone, Copy)]
pub struct CpuProbe {
    /// The server's process, when known (a child process or --server-pid).
    pub server_pid: Option<u32>,
    /// Clock ticks per second of those fields.
    pub ticks_per_second: u64,
}

impl CpuProbe {
    pub fn new(server_pid: Option<u32>) -> CpuProbe {
        CpuProbe {
            server_pid,
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    fn read(&self) -> (Option<u64>, Option<u64>) {
        (
            self.server_pid
                .and_then(|pid| cpu_ticks(&format!("/proc/{pid}/stat"))),
            cpu_ticks("/proc/self/stat"),
        )
    }

    fn elapsed(&self, start: Option<u64>, end: Option<u64>) -> Option<Duration> {
        let ticks = end?.checked_sub(start?)?;
        Some(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second.max(1) as f64,
        ))
    }
}

/// `utime + stime` in clock ticks. The command name (field 2) may hold spaces and parentheses,
/// so the fields are counted after its closing parenthesis.
fn cpu_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    parse_cpu_ticks(&stat)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid … cmajflt (4–12), utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)` without libc: the kernel passes it to every process as `AT_CLKTCK`
/// (type 17) in the auxiliary vector, `/proc/self/auxv`. 100 (Linux's USER_HZ everywhere) if
/// that cannot be read.
pub fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let width = std::mem::size_of::<usize>();
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    let word = |chunk: &[u8]| {
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(chunk);
        u64::from_ne_bytes(bytes)
    };
    auxv.chunks_exact(2 * width)
        .map(|pair| (word(&pair[..width]), word(&pair[width..])))
        .find(|&(kind, value)| kind == AT_CLKTCK && value > 0)
        .map_or(100, |(_, value)| value)
}

struct WorkerResult {
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u64>,
    behind: u64,
    max_lag: Duration,
}

impl WorkerResult {
    fn record(&mut self, outcome: Result<(), String>, nanos: u64) {
        match outcome {
            Ok(()) => self.latencies.push(nanos),
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Runs `op` from `concurrency` tasks under `load`: `warmup` unmeasured, then `duration`
/// measured (closed and open loops) or `requests` measured calls (fixed count).
pub async fn run(
    op: Arc<dyn Op>,
    load: Load,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    cpu: CpuProbe,
) -> Sample {
    // Each run numbers its calls from a base of its own, so that (worker, seq) stays unique
    // across the runs of one process (a closed loop and then an open loop of one scenario).
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let seq_base = RUNS.fetch_add(1, Ordering::Relaxed) << 32;
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + duration;
    // Fixed count: measured calls handed out by a shared counter; open loop: the schedule's
    // next call index.
    let issued = Arc::new(AtomicU64::new(0));
    // CPU at the start of the measured interval, read by a task that wakes up then.
    let cpu_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        (cpu.read(), Instant::now())
    });
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let op = op.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = WorkerResult {
                errors: 0,
                first_error: None,
                latencies: Vec::with_capacity(4096),
                behind: 0,
                max_lag: Duration::ZERO,
            };
            let mut seq = seq_base;
            match load {
                Load::Closed => loop {
                    let started = Instant::now();
                    if started >= until {
                        break;
                    }
                    let outcome = op.call(worker, seq).await;
                    let nanos = nanos_since(started);
                    seq += 1;
                    if started >= measure_from {
                        result.record(outcome, nanos);
                    }
                },
                Load::Count { requests } => {
                    loop {
                        let started = Instant::now();
                        if started >= measure_from {
                            break;
                        }
                        let _ = op.call(worker, seq).await;
                        seq += 1;
                    }
                    while issued.fetch_add(1, Ordering::Relaxed) < requests {
                        let started = Instant::now();
                        let outcome = op.call(worker, seq).await;
                        result.record(outcome, nanos_since(started));
                        seq += 1;
                    }
                }
                Load::Open { rate } => {
                    let interval = 1.0 / rate;
                    loop {
                        let index = issued.fetch_add(1, Ordering::Relaxed);
                        let scheduled = start + Duration::from_secs_f64(index as f64 * interval);
                        if scheduled >= until {
                            break;
                        }
                        let picked = Instant::now();
                        if picked < scheduled {
                            tokio::time::sleep_until(scheduled.into()).await;
                        }
                        let outcome = op.call(worker, seq).await;
                        let nanos = nanos_since(scheduled);
                        seq += 1;
                        if scheduled >= measure_from {
                            if picked > scheduled {
                                result.behind += 1;
                                result.max_lag = result.max_lag.max(picked - scheduled);
                            }
                            result.record(outcome, nanos);
                        }
                    }
                }
            }
            result
        }));
    }
    let mut sample = Sample {
        load,
        ops: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        duration,
        behind: 0,
        max_lag: Duration::ZERO,
        server_cpu: None,
        bench_cpu: None,
    };
    for task in tasks {
        match task.await {
            Ok(result) => {
                sample.errors += result.errors;
                if sample.first_error.is_none() {
                    sample.first_error = result.first_error;
                }
                sample.latencies.extend(result.latencies);
                sample.behind += result.behind;
                sample.max_lag = sample.max_lag.max(result.max_lag);
            }
            Err(error) => {
                sample.errors += 1;
                sample
                    .first_error
                    .get_or_insert_with(|| format!("worker panicked: {error}"));
            }
        }
    }
    // Closed and open loops end at `until` (calls still in flight then finish after it and
    // are counted; the CPU is read when all have finished); the fixed count ends with its last
    // call.
    let (server_end, bench_end) = cpu.read();
    let ended = Instant::now();
    if let Ok(((server_start, bench_start), cpu_started)) = cpu_start.await {
        sample.server_cpu = cpu.elapsed(server_start, server_end);
        sample.bench_cpu = cpu.elapsed(bench_start, bench_end);
        if matches!(load, Load::Count { .. }) {
            sample.duration = ended.saturating_duration_since(cpu_started);
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
            load: Load::Closed,
            ops: 100,
            errors: 0,
            first_error: None,
            latencies: (1..=100).map(|n| n * 1000).collect(),
            duration: Duration::from_secs(1),
            behind: 0,
            max_lag: Duration::ZERO,
            server_cpu: Some(Duration::from_millis(50)),
            bench_cpu: None,
        };
        assert_eq!(sample.quantile_us(0.5), Some(50.0));
        assert_eq!(sample.quantile_us(0.99), Some(99.0));
        assert_eq!(sample.max_us(), Some(100.0));
        assert_eq!(sample.server_cpu_us_per_op(), Some(500.0));
        assert_eq!(sample.bench_cpu_us_per_op(), None);
    }

    #[test]
    fn stat_cpu_fields() {
        let stat = "4242 (creditd (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 56 0 0 20 0 9 0 100 2000000 3000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1290));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert!(cpu_ticks("/proc/self/stat").is_some());
        assert!(clock_ticks_per_second() > 0);
    }
}
