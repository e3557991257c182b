//! Instructions the server retires over a measurement: `perf stat -e instructions -p <pid>`,
//! started before the measured calls and stopped with SIGINT after them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

pub struct Perf {
    child: Child,
}

impl Perf {
    /// Starts counting the process's instructions (CSV output on stderr).
    pub fn attach(pid: u32) -> anyhow::Result<Perf> {
        let child = Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "instructions",
                "-p",
                &pid.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting `perf stat` (install perf: apt-get install linux-perf)")?;
        // perf needs a moment to open the counters; calls before that would not be counted.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Perf { child })
    }

    /// Stops counting; the count, or `None` (with the reason on stderr) when perf could not
    /// count instructions (e.g. a VM without a virtual PMU: `<not supported>`).
    pub fn finish(self) -> Option<u64> {
        let stopped = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        if !stopped.is_ok_and(|status| status.success()) {
            eprintln!("  could not stop perf stat");
        }
        let output = match self.child.wait_with_output() {
            Ok(output) => output,
            Err(error) => {
                eprintln!("  perf stat: {error}");
                return None;
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        let count = parse(&stderr);
        if count.is_none() {
            eprintln!(
                "  perf stat counted no instructions: {}",
                stderr.trim().replace('\n', " | ")
            );
        }
        count
    }
}

/// The count from `perf stat -x ,` output: the line whose third field is the event name.
fn parse(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(',').collect();
        let event = fields.get(2)?;
        if !event.starts_with("instructions") {
            return None;
        }
        fields.first()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn perf_csv() {
        assert_eq!(
            parse("123456789,,instructions:u,1000,100.00,,\n"),
            Some(123_456_789)
        );
        assert_eq!(parse("<not supported>,,instructions,0,100.00,,\n"), None);
        assert_eq!(parse(""), None);
    }
}
