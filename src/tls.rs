//! Optional TLS for both listeners (rustls with the ring provider), with optional client
//! certificate verification (mutual TLS).
//!
//! `--tls-cert` and `--tls-key` turn TLS on for the gRPC and the HTTP listener alike (one
//! certificate for both); `--tls-client-ca` also makes every client present a certificate signed
//! by that CA. The files are read and checked once, at startup, so a bad configuration stops the
//! server with an error naming the flag instead of failing the first handshake.
//!
//! ALPN: the gRPC listener offers `h2` only; the HTTP listener offers `h2` and `http/1.1`.
//!
//! Handshakes run off the accept loop, concurrently, each bounded by [`HANDSHAKE_TIMEOUT`], so a
//! slow or silent client never holds up the others. A failed handshake (plain HTTP sent to a TLS
//! port, no or a foreign client certificate under mutual TLS) closes only that connection and is
//! logged at debug level (load balancers' TCP probes would otherwise flood the log).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

pub use tokio_rustls::server::TlsStream;

use crate::config::ServeConfig;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const READY_CONNECTIONS: usize = 64;

/// The ALPN protocols each listener offers.
const GRPC_ALPN: &[&[u8]] = &[b"h2"];
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The TLS settings of both listeners, loaded and checked.
#[derive(Clone)]
pub struct ServerTls {
    grpc: TlsAcceptor,
    http: TlsAcceptor,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS settings `config` asks for: `None` when TLS is off. Errors when only one of
    /// certificate and key is given, when a client CA is given without them, or when a file is
    /// missing, unreadable, or does not hold what it should.
    pub fn from_config(config: &ServeConfig) -> anyhow::Result<Option<ServerTls>> {
        match (&config.tls_cert, &config.tls_key) {
            (None, None) => {
                if config.tls_client_ca.is_some() {
                    bail!(
                        "--tls-client-ca (CREDITD_TLS_CLIENT_CA) is set but --tls-cert and \
                         --tls-key are not: client certificates need TLS, so give the server's \
                         certificate and key too"
                    );
                }
                Ok(None)
            }
            (Some(_), None) => bail!(
                "--tls-cert (CREDITD_TLS_CERT) is set but --tls-key (CREDITD_TLS_KEY) is not: \
                 give both to serve TLS, or neither to serve plaintext"
            ),
            (None, Some(_)) => bail!(
                "--tls-key (CREDITD_TLS_KEY) is set but --tls-cert (CREDITD_TLS_CERT) is not: \
                 give both to serve TLS, or neither to serve plaintext"
            ),
            (Some(cert), Some(key)) => {
                Self::load(cert, key, config.tls_client_ca.as_deref()).map(Some)
            }
        }
    }

    /// Loads a PEM certificate chain and its private key and, for mutual TLS, the PEM CA
    /// certificate(s) that client certificates must be signed by.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<ServerTls> {
        let chain = read_certificates(cert, "--tls-cert")?;
        let private_key = read_private_key(key)?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS: the crypto provider supports no safe protocol version")?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        };
        let config = builder
            .with_single_cert(chain, private_key)
            .with_context(|| {
                format!(
                    "--tls-cert {} and --tls-key {} do not make a usable identity (does the key \
                 belong to the certificate?)",
                    cert.display(),
                    key.display()
                )
            })?;
        Ok(ServerTls {
            grpc: acceptor(config.clone(), GRPC_ALPN),
            http: acceptor(config, HTTP_ALPN),
            mutual: client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn requires_client_certificates(&self) -> bool {
        self.mutual
    }

    /// The gRPC listener's connections, handshaken, for `serve_with_incoming_shutdown`. Must be
    /// called inside the Tokio runtime; accepting stops when the stream is dropped.
    pub fn grpc_incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
        TlsListener::new(listener, self.grpc.clone()).into_stream()
    }

    /// The HTTP listener's connections, handshaken, for `axum::serve`. Must be called inside the
    /// Tokio runtime; accepting stops when the listener is dropped.
    pub fn http_listener(&self, listener: TcpListener) -> TlsListener {
        TlsListener::new(listener, self.http.clone())
    }
}

fn acceptor(mut config: ServerConfig, alpn: &[&[u8]]) -> TlsAcceptor {
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

fn read_certificates(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path, flag)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag}: {} is not valid PEM", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "{flag}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certificates)
}

fn read_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_pem(path, "--tls-key")?;
    PrivateKeyDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "--tls-key: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path, "--tls-client-ca")? {
        roots.add(certificate).with_context(|| {
            format!(
                "--tls-client-ca: {} holds a certificate that cannot be a trust anchor",
                path.display()
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .with_context(|| {
            format!(
                "--tls-client-ca: cannot verify clients against {}",
                path.display()
            )
        })
}

/// A listener of TLS connections: a background task accepts TCP connections and runs their
/// handshakes concurrently; [`axum::serve::Listener::accept`] (or the stream of
/// [`TlsListener::into_stream`]) hands out the ones that completed. Dropping it stops accepting
/// and closes the port.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: Option<SocketAddr>,
}

impl TlsListener {
    /// Starts accepting on `listener`; must be called inside the Tokio runtime.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        let local_addr = listener.local_addr().ok();
        let (sender, ready) = mpsc::channel(READY_CONNECTIONS);
        tokio::spawn(accept_loop(listener, acceptor, sender));
        TlsListener { ready, local_addr }
    }

    /// The handshaken connections as a stream (it never yields an error: failed handshakes are
    /// logged and skipped).
    pub fn into_stream(self) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send {
        tokio_stream::wrappers::ReceiverStream::new(self.ready).map(|(stream, _)| Ok(stream))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ends only once this listener is dropped, so this is unreachable;
            // if it ever ended otherwise, accept nothing more rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.local_addr
            .ok_or_else(|| io::Error::other("the listener has no local address"))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Dropping the set (when this loop ends) aborts the handshakes still running.
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            _ = ready.closed() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let ready = ready.clone();
                    handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(connection)) => {
                                let _ = ready.send((connection, peer)).await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
