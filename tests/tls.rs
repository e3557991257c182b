//! TLS on both listeners (`--tls-cert`/`--tls-key`) and mutual TLS (`--tls-client-ca`):
//! certificates made with rcgen into a temporary directory, real servers, and small clients of
//! our own (the harness's REST helper speaks plain HTTP).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::{Backend, TestApp};
use creditd::config::{Cli, ServeConfig};
use creditd::grpc::proto;
use creditd::server::Server;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

/// A certificate authority that can sign leaves.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Authority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pem {
        let names = names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Everything the tests need: a server CA and its server certificate (localhost, 127.0.0.1), a
/// separate client CA with a client certificate, and a client certificate the client CA did not
/// sign. The server's files are written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: String,
    client: Pem,
    stranger: Pem,
}

impl Pki {
    fn new() -> Pki {
        let server_ca = Authority::new("creditd test server CA");
        let client_ca = Authority::new("creditd test client CA");
        let server = server_ca.sign(
            "creditd",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = client_ca.sign("billing", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = server_ca.sign("stranger", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.crt"), &server.cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
        std::fs::write(dir.path().join("client-ca.crt"), &client_ca.pem).unwrap();
        Pki {
            dir,
            server_ca: server_ca.pem,
            client,
            stranger,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Serve TLS; with `mutual`, require client certificates signed by the client CA.
    fn configure(&self, config: &mut ServeConfig, mutual: bool) {
        config.tls_cert = Some(self.path("server.crt"));
        config.tls_key = Some(self.path("server.key"));
        config.tls_client_ca = mutual.then(|| self.path("client-ca.crt"));
    }

    /// A REST client trusting the server CA, presenting `identity` if given.
    fn rest_client(&self, identity: Option<&Pem>, app: &TestApp) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.server_ca.as_bytes()).unwrap(),
            )
            .resolve("localhost", http_addr(app))
            .timeout(Duration::from_secs(10));
        if let Some(identity) = identity {
            let pem = format!("{}{}", identity.cert, identity.key);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// A gRPC channel over TLS trusting the server CA, presenting `identity` if given.
    async fn grpc_channel(
        &self,
        identity: Option<&Pem>,
        app: &TestApp,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.server_ca))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
        }
        Channel::from_shared(format!("https://127.0.0.1:{}", app.grpc_addr.port()))
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
    }
}

fn http_addr(app: &TestApp) -> SocketAddr {
    app.http_base
        .strip_prefix("http://")
        .expect("harness base URL")
        .parse()
        .expect("socket address")
}

fn https_url(app: &TestApp, path: &str) -> String {
    format!("https://localhost:{}{path}", http_addr(app).port())
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|response| response.into_inner().status)
}

/// Whether a gRPC health check over TLS with `identity` succeeds (connecting or calling may fail).
async fn grpc_health_with(pki: &Pki, identity: Option<&Pem>, app: &TestApp) -> bool {
    match pki.grpc_channel(identity, app).await {
        Ok(channel) => match health(channel).await {
            Ok(status) => status == ServingStatus::Serving as i32,
            Err(_) => false,
        },
        Err(_) => false,
    }
}

async fn spawn_tls(pki: &Pki, mutual: bool) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |config| pki.configure(config, mutual)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_over_https_with_the_ca_trusted_succeeds_and_plain_http_is_refused() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let client = pki.rest_client(None, &app);

    let created = client
        .post(https_url(&app, "/v1/customers"))
        .basic_auth(&app.key, Some(""))
        .form(&[("name", "Ada Lovelace")])
        .send()
        .await
        .expect("https request");
    assert_eq!(created.status(), 200);
    let customer: serde_json::Value = created.json().await.unwrap();
    assert_eq!(customer["object"], "customer");
    let listed: serde_json::Value = client
        .get(https_url(&app, "/v1/customers"))
        .basic_auth(&app.key, Some(""))
        .send()
        .await
        .expect("https request")
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], customer["id"]);
    let healthz = client
        .get(https_url(&app, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);

    // The certificate also names 127.0.0.1.
    let by_ip = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.server_ca.as_bytes()).unwrap())
        .build()
        .unwrap()
        .get(format!("https://{}/healthz", http_addr(&app)))
        .send()
        .await
        .expect("https by IP address");
    assert_eq!(by_ip.status(), 200);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{}/v1/customers", app.http_base))
        .basic_auth(&app.key, Some(""))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP to the TLS port answered: {plain:?}"
    );

    // A client that does not trust the server's CA refuses the connection.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", http_addr(&app))
        .build()
        .unwrap()
        .get(https_url(&app, "/healthz"))
        .send()
        .await;
    assert!(
        untrusting.is_err(),
        "an unknown CA was accepted: {untrusting:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_works_with_the_ca_trusted_and_plaintext_grpc_is_refused() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let channel = pki.grpc_channel(None, &app).await.expect("TLS channel");

    assert_eq!(
        health(channel.clone()).await.expect("health check"),
        ServingStatus::Serving as i32
    );
    // A real, authenticated call, and its result read back over HTTPS.
    let mut customers = proto::customer_service_client::CustomerServiceClient::new(channel);
    let customer = customers
        .create_customer(app.grpc(proto::CreateCustomerRequest {
            name: Some("Grace Hopper".into()),
            ..Default::default()
        }))
        .await
        .expect("create customer over TLS")
        .into_inner();
    let fetched: serde_json::Value = pki
        .rest_client(None, &app)
        .get(https_url(&app, &format!("/v1/customers/{}", customer.id)))
        .basic_auth(&app.key, Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["name"], "Grace Hopper");

    // Plaintext HTTP/2 to the TLS port fails.
    let plaintext = async {
        let channel = Channel::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        health(channel).await
    }
    .await;
    assert!(
        plaintext.is_err(),
        "plaintext gRPC to the TLS port answered: {plaintext:?}"
    );
}

/// ALPN: gRPC offers only `h2`; HTTP offers `h2` and `http/1.1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_h2_for_grpc_and_h2_or_http1_for_http() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false).await;
    let negotiate = |addr: SocketAddr, offered: &'static [&'static [u8]]| {
        let ca = pki.server_ca.clone();
        async move {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(tls.get_ref().1.alpn_protocol().map(|p| p.to_vec()))
        }
    };
    let http = http_addr(&app);
    assert_eq!(
        negotiate(http, &[b"h2", b"http/1.1"]).await.unwrap(),
        Some(b"h2".to_vec())
    );
    assert_eq!(
        negotiate(http, &[b"http/1.1"]).await.unwrap(),
        Some(b"http/1.1".to_vec())
    );
    assert_eq!(
        negotiate(app.grpc_addr, &[b"h2", b"http/1.1"])
            .await
            .unwrap(),
        Some(b"h2".to_vec())
    );
    assert!(
        negotiate(app.grpc_addr, &[b"http/1.1"]).await.is_err(),
        "the gRPC listener accepted a client offering only HTTP/1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca_on_both_listeners() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, true).await;

    // REST: no certificate, or one the client CA did not sign, is refused.
    for (label, identity) in [
        ("no certificate", None),
        ("a stranger's", Some(&pki.stranger)),
    ] {
        let refused = pki
            .rest_client(identity, &app)
            .get(https_url(&app, "/v1/customers"))
            .basic_auth(&app.key, Some(""))
            .send()
            .await;
        assert!(refused.is_err(), "REST with {label} answered: {refused:?}");
    }
    // REST: the client CA's certificate is accepted (and the API key still applies).
    let accepted = pki
        .rest_client(Some(&pki.client), &app)
        .get(https_url(&app, "/v1/customers"))
        .basic_auth(&app.key, Some(""))
        .send()
        .await
        .expect("REST with a client certificate");
    assert_eq!(accepted.status(), 200);
    let unauthenticated = pki
        .rest_client(Some(&pki.client), &app)
        .get(https_url(&app, "/v1/customers"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // gRPC: the same.
    assert!(
        !grpc_health_with(&pki, None, &app).await,
        "gRPC without a client certificate was served"
    );
    assert!(
        !grpc_health_with(&pki, Some(&pki.stranger), &app).await,
        "gRPC with a certificate the client CA did not sign was served"
    );
    assert!(
        grpc_health_with(&pki, Some(&pki.client), &app).await,
        "gRPC with a client certificate was refused"
    );

    // Refused handshakes do not disturb the listeners: a good client still gets through.
    let again = pki
        .rest_client(Some(&pki.client), &app)
        .get(https_url(&app, "/healthz"))
        .send()
        .await
        .expect("REST after refused clients");
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_refuses_a_certificate_without_a_key_and_other_broken_tls_settings() {
    let pki = Pki::new();
    let database = tempfile::tempdir().unwrap();
    let base = || {
        ServeConfig::ephemeral(format!(
            "sqlite:{}",
            database.path().join("creditd.sqlite").display()
        ))
    };
    let startup_error = |config: ServeConfig| async move {
        let error = Server::build(&config)
            .await
            .err()
            .expect("startup should fail");
        format!("{error:#}")
    };

    let mut config = base();
    config.tls_cert = Some(pki.path("server.crt"));
    let message = startup_error(config).await;
    assert!(
        message.contains(
            "--tls-cert (CREDITD_TLS_CERT) is set but --tls-key (CREDITD_TLS_KEY) is not"
        ),
        "{message}"
    );
    // Refused before the database was touched.
    assert!(!database.path().join("creditd.sqlite").exists());

    let mut config = base();
    config.tls_key = Some(pki.path("server.key"));
    let message = startup_error(config).await;
    assert!(
        message.contains("--tls-key (CREDITD_TLS_KEY) is set but --tls-cert"),
        "{message}"
    );

    let mut config = base();
    config.tls_client_ca = Some(pki.path("client-ca.crt"));
    let message = startup_error(config).await;
    assert!(
        message.contains("--tls-client-ca (CREDITD_TLS_CLIENT_CA) is set but"),
        "{message}"
    );

    let mut config = base();
    pki.configure(&mut config, false);
    config.tls_key = Some(pki.path("missing.key"));
    let message = startup_error(config).await;
    assert!(message.contains("--tls-key: cannot read"), "{message}");
    assert!(message.contains("missing.key"), "{message}");

    // A key that is not the certificate's.
    let other =
        Authority::new("other").sign("x", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(pki.path("other.key"), &other.key).unwrap();
    let mut config = base();
    pki.configure(&mut config, false);
    config.tls_key = Some(pki.path("other.key"));
    let message = startup_error(config).await;
    assert!(
        message.contains("does the key belong to the certificate"),
        "{message}"
    );

    // The key given as the certificate.
    let mut config = base();
    pki.configure(&mut config, false);
    config.tls_cert = Some(pki.path("server.key"));
    let message = startup_error(config).await;
    assert!(message.contains("--tls-cert:"), "{message}");
    assert!(message.contains("holds no PEM certificate"), "{message}");

    // `Server::bind` (which the test harness uses) runs the same check.
    let mut config = base();
    config.tls_cert = Some(pki.path("server.crt"));
    assert!(creditd::tls::ServerTls::from_config(&config).is_err());

    // On the command line, clap refuses a half configuration before anything runs.
    let error = Cli::try_parse_from(["creditd", "serve", "--tls-cert", "server.crt"])
        .expect_err("--tls-cert alone should not parse");
    assert_eq!(
        error.kind(),
        clap::error::ErrorKind::MissingRequiredArgument
    );
    assert!(error.to_string().contains("--tls-key"), "{error}");
    let parsed = Cli::try_parse_from([
        "creditd",
        "serve",
        "--tls-cert",
        "server.crt",
        "--tls-key",
        "server.key",
        "--tls-client-ca",
        "ca.crt",
    ]);
    assert!(parsed.is_ok(), "{parsed:?}");
}

/// With TLS on, shutdown still stops accepting, drains, and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_shut_down_gracefully() {
    let pki = Pki::new();
    let database = common::TestDatabase::create(Backend::Sqlite).await;
    let mut config = ServeConfig::ephemeral(database.url.clone());
    pki.configure(&mut config, false);
    let db = creditd::store::Db::connect(&config.database.options())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let server = Server::bind(&config, creditd::service::Services::new(db))
        .await
        .unwrap();
    let (grpc_addr, http) = (server.grpc_addr(), server.http_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.server_ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let healthz = client
        .get(format!("https://{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("shutdown finished within the grace period")
        .unwrap()
        .expect("clean shutdown");
    for addr in [grpc_addr, http] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts connections after shutdown"
        );
    }
}
