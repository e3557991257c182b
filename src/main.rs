//! The `creditd` binary: `serve`, `migrate`, `keys`, `listen` and `audit`.

use std::process::ExitCode;

use clap::Parser;

use creditd::config::{Cli, Command, KeysCommand, LogFormat};
use creditd::server::{Server, shutdown_signal};
use creditd::service::Services;
use creditd::store::Db;

/// Errors end the process with one line per cause and exit status 1, never a backtrace (which
/// `anyhow` would print from `main` returning `Result` whenever `RUST_BACKTRACE` is set).
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return report(&anyhow::Error::from(err)),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("creditd: error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            let telemetry = creditd::telemetry::init(config.log_format);
            let server = Server::build(&config).await?;
            tracing::info!(
                grpc = %server.grpc_addr(),
                http = %server.http_addr(),
                database = %redact_url(&config.database.database_url),
                "creditd is serving"
            );
            let result = server.run_until(shutdown_signal()).await;
            telemetry.shutdown();
            result
        }
        Command::Migrate(database) => {
            let _telemetry = creditd::telemetry::init_with(LogFormat::Auto, None);
            let db = Db::connect(&database.options()).await?;
            db.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Keys(command) => keys(command).await,
        Command::Listen(config) => creditd::listen::run(config, shutdown_signal()).await,
        Command::Audit { database, json } => audit(database, json).await,
    }
}

/// `creditd audit`: audits the whole database (read-only, no migrations) and prints the report;
/// exit status 1 when it has findings.
async fn audit(database: creditd::config::DatabaseConfig, json: bool) -> anyhow::Result<()> {
    let db = Db::connect(&database.options()).await?;
    let report = Services::new(db.clone()).audit_everything().await?;
    db.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if !report.is_clean() {
        std::io::Write::flush(&mut std::io::stdout())?;
        std::process::exit(1);
    }
    Ok(())
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let database = match &command {
        KeysCommand::Create { database, .. }
        | KeysCommand::List { database }
        | KeysCommand::Revoke { database, .. } => database,
    };
    let db = Db::connect(&database.options()).await?;
    db.migrate().await?;
    let services = Services::new(db);
    match command {
        KeysCommand::Create {
            live,
            account,
            hashing,
            ..
        } => {
            let services = services.with_api_key_pepper(hashing.pepper()?);
            let account = match account {
                Some(account) => account,
                None => services.create_account().await?,
            };
            let key = services.create_api_key(&account, live).await?;
            println!("{}", key.reveal());
            eprintln!("account: {account}");
        }
        KeysCommand::List { .. } => {
            for key in services.list_api_keys().await? {
                let mode = if key.livemode { "live" } else { "test" };
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{mode}\t{state}\t{}",
                    key.id,
                    key.account_id,
                    creditd::service::auth::display_hint(&key)
                );
            }
        }
        KeysCommand::Revoke { id, .. } => {
            services.revoke_api_key(&id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Hides a password in a database URL before it is logged.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
