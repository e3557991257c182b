//! What the load goes to: a server of our own (a child `creditd serve` process, or in this
//! process) on a fresh database, or a running server; and how to read its memory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use creditd::config::ServeConfig;
use creditd::domain::Tenant;
use creditd::server::Server;
use creditd::service::Services;
use creditd::store::{Db, DbOptions};
use tokio::sync::oneshot;

use crate::seed;

/// A database made for this run, removed by [`Database::remove`] unless kept.
pub struct Database {
    pub url: String,
    pub description: String,
    cleanup: Cleanup,
}

enum Cleanup {
    None,
    Directory(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl Database {
    /// `None`: a SQLite file in a new temporary directory. `sqlite:<file>`: that file as it is.
    /// `postgres://…`: a new database on that server.
    pub async fn prepare(url: Option<&str>) -> anyhow::Result<Database> {
        let tag = creditd::domain::ids::random_base62(10).to_lowercase();
        match url {
            None => {
                let dir = std::env::temp_dir().join(format!("creditd-bench-{tag}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let file = dir.join("creditd.sqlite");
                Ok(Database {
                    url: format!("sqlite:{}", file.display()),
                    description: format!("SQLite {} (temporary)", file.display()),
                    cleanup: Cleanup::Directory(dir),
                })
            }
            Some(url) if url.starts_with("sqlite:") => Ok(Database {
                url: url.to_string(),
                description: format!("SQLite {}", url.trim_start_matches("sqlite:")),
                cleanup: Cleanup::None,
            }),
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
                let name = format!("creditd_bench_{tag}");
                let created = seed::create_database(url, &name)
                    .await
                    .map_err(|error| anyhow::anyhow!("creating database {name}: {error}"))?;
                Ok(Database {
                    url: created,
                    description: format!("PostgreSQL database {name} (new)"),
                    cleanup: Cleanup::Postgres {
                        admin_url: url.to_string(),
                        name,
                    },
                })
            }
            Some(other) => {
                bail!("--database-url must be sqlite:<file> or postgres://…, not {other}")
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// Removes what [`Database::prepare`] created; `keep` only says where it is.
    pub async fn remove(self, keep: bool) {
        if keep {
            if !matches!(self.cleanup, Cleanup::None) {
                eprintln!("kept the database: {}", self.url);
            }
            return;
        }
        match self.cleanup {
            Cleanup::None => {}
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                if let Err(error) = seed::drop_database(&admin_url, &name).await {
                    eprintln!("could not drop database {name}: {error}");
                }
            }
        }
    }
}

/// Connects and migrates, then makes an account with a test-mode key.
pub async fn open_with_key(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<(Services, String, Tenant)> {
    let db = Db::connect(&DbOptions {
        max_connections,
        ..DbOptions::new(url)
    })
    .await
    .map_err(|error| anyhow::anyhow!("connecting to the database: {error}"))?;
    db.migrate()
        .await
        .map_err(|error| anyhow::anyhow!("migrating: {error}"))?;
    let services = Services::new(db);
    let account_id = services
        .create_account()
        .await
        .map_err(|error| anyhow::anyhow!("creating an account: {error}"))?;
    let key = services
        .create_api_key(&account_id, false)
        .await
        .map_err(|error| anyhow::anyhow!("creating a key: {error}"))?
        .reveal()
        .to_string();
    Ok((
        services,
        key,
        Tenant {
            account_id,
            livemode: false,
        },
    ))
}

/// A server this run started, and how to stop it.
pub enum RunningServer {
    InProcess {
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
    Process(ChildServer),
    /// Someone else's.
    Remote,
}

impl RunningServer {
    pub async fn stop(self) {
        match self {
            RunningServer::InProcess { stop, task } => {
                let _ = stop.send(());
                match tokio::time::timeout(Duration::from_secs(10), task).await {
                    Ok(Ok(Err(error))) => eprintln!("the in-process server failed: {error:#}"),
                    Ok(Err(error)) => eprintln!("the in-process server panicked: {error}"),
                    _ => {}
                }
            }
            RunningServer::Process(child) => drop(child),
            RunningServer::Remote => {}
        }
    }
}

/// Serves `services` in this process on ephemeral loopback ports; returns the gRPC and HTTP
/// URLs.
pub async fn start_in_process(
    url: &str,
    max_connections: u32,
    services: Services,
) -> anyhow::Result<(RunningServer, String, String)> {
    let mut config = ServeConfig::ephemeral(url);
    config.database.db_max_connections = max_connections;
    let server = Server::bind(&config, services).await?;
    let grpc = format!("http://{}", server.grpc_addr());
    let http = format!("http://{}", server.http_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    Ok((RunningServer::InProcess { stop, task }, grpc, http))
}

/// The `creditd` executable next to this one.
pub fn sibling_creditd() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe
        .parent()?
        .join(format!("creditd{}", std::env::consts::EXE_SUFFIX));
    candidate.is_file().then_some(candidate)
}

/// A `creditd serve` child process, killed when dropped.
pub struct ChildServer {
    child: Child,
}

impl ChildServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `creditd serve` on ephemeral loopback ports and learns them from its JSON log line
/// "creditd is serving". Its `CREDITD_*` environment is cleared so that only these flags count.
pub fn start_process(
    binary: &std::path::Path,
    url: &str,
    max_connections: u32,
) -> anyhow::Result<(RunningServer, String, String)> {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--database-url", url])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--db-max-connections", &max_connections.to_string()])
        .args(["--expiry-sweep-interval-seconds", "0"])
        .args(["--no-bootstrap-key", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CREDITD_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (addresses, found) = mpsc::channel::<(String, String)>();
    // Reads the log to the end (so the pipe never fills), passing on warnings and errors.
    std::thread::spawn(move || {
        let mut addresses = Some(addresses);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                eprintln!("creditd: {line}");
                continue;
            };
            if event["message"] == "creditd is serving"
                && let (Some(grpc), Some(http)) = (event["grpc"].as_str(), event["http"].as_str())
                && let Some(sender) = addresses.take()
            {
                let _ = sender.send((grpc.to_string(), http.to_string()));
            }
            if matches!(event["level"].as_str(), Some("WARN" | "ERROR")) {
                eprintln!("creditd: {line}");
            }
        }
    });
    let mut server = ChildServer { child };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match found.recv_timeout(Duration::from_millis(50)) {
            Ok((grpc, http)) => {
                return Ok((
                    RunningServer::Process(server),
                    format!("http://{grpc}"),
                    format!("http://{http}"),
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.wait()?;
                bail!("creditd serve exited ({status}) before it was serving");
            }
        }
        if let Some(status) = server.child.try_wait()? {
            bail!("creditd serve exited ({status}) before it was serving");
        }
        if Instant::now() > deadline {
            bail!("creditd serve did not report its ports within two minutes");
        }
    }
}

/// Reads a process's resident memory from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct MemoryProbe {
    /// `None`: this process.
    pub pid: Option<u32>,
    /// The server shares this process with the load generator.
    pub shared: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS since start or since the last reset), KiB.
    pub hwm_kib: u64,
}

impl MemoryProbe {
    fn proc_path(&self, file: &str) -> String {
        match self.pid {
            Some(pid) => format!("/proc/{pid}/{file}"),
            None => format!("/proc/self/{file}"),
        }
    }

    pub fn read(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(self.proc_path("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
        };
        Some(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// Resets the peak (VmHWM) to the current RSS; `false` when the kernel refused.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(self.proc_path("clear_refs"), "5").is_ok()
    }

    pub fn scope(&self) -> &'static str {
        if self.shared {
            "shared process (server + load generator)"
        } else {
            "server process"
        }
    }
}

/// Samples a probe's RSS every 20 ms while a scenario runs.
pub struct PeakWatch {
    probe: MemoryProbe,
    reset: bool,
    stop: oneshot::Sender<()>,
    sampler: tokio::task::JoinHandle<u64>,
}

impl PeakWatch {
    pub fn start(probe: MemoryProbe) -> PeakWatch {
        let reset = probe.reset_peak();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            let mut ticks = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        if let Some(memory) = probe.read() {
                            peak = peak.max(memory.rss_kib);
                        }
                    }
                    _ = &mut stopped => return peak,
                }
            }
        });
        PeakWatch {
            probe,
            reset,
            stop,
            sampler,
        }
    }

    /// The peak RSS in KiB and how it was found: VmHWM when its reset worked (it sees every
    /// page), otherwise the highest VmRSS sampled every 20 ms.
    pub async fn finish(self) -> Option<(u64, &'static str)> {
        let _ = self.stop.send(());
        let sampled = self.sampler.await.unwrap_or(0);
        let memory = self.probe.read();
        let (peak, source) = match memory {
            Some(memory) if self.reset => (memory.hwm_kib.max(sampled), "VmHWM"),
            Some(memory) => (memory.rss_kib.max(sampled), "sampled VmRSS"),
            None => (sampled, "sampled VmRSS"),
        };
        (peak > 0).then_some((peak, source))
    }
}
