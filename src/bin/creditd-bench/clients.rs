//! The clients: the generated tonic clients over `connections` HTTP/2 connections, and a small
//! hyper client for the Stripe REST shim that posts forms with Basic auth like a Stripe SDK.

use std::time::Duration;

use anyhow::{Context, bail};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

const AGENT: &str = concat!("creditd-bench/", env!("CARGO_PKG_VERSION"));

/// gRPC: one channel (one HTTP/2 connection) per `--connections`, shared round-robin by the
/// workers, and the caller's key.
#[derive(Clone)]
pub struct Grpc {
    channels: Vec<Channel>,
    authorization: MetadataValue<Ascii>,
}

impl Grpc {
    pub async fn connect(url: &str, key: &str, connections: usize) -> anyhow::Result<Grpc> {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let channel = Endpoint::from_shared(url.to_string())
                .with_context(|| format!("gRPC URL {url}"))?
                .connect_timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to gRPC at {url}"))?;
            channels.push(channel);
        }
        let authorization = format!("Bearer {key}")
            .parse()
            .context("the API key is not ASCII")?;
        Ok(Grpc {
            channels,
            authorization,
        })
    }

    /// The channel of a worker.
    pub fn channel(&self, worker: usize) -> Channel {
        self.channels[worker % self.channels.len()].clone()
    }

    /// A request carrying the key, and an idempotency key when given.
    pub fn request<T>(&self, message: T, idempotency_key: Option<String>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        if let Some(key) = idempotency_key.and_then(|key| key.parse().ok()) {
            request.metadata_mut().insert("idempotency-key", key);
        }
        request
    }
}

/// Which HTTP the REST client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestProtocol {
    /// HTTP/1.1 with keep-alive, one connection per worker (as a Stripe SDK's pool does).
    Http1,
    /// HTTP/2 with prior knowledge over `--connections` connections, like the gRPC client.
    Http2,
}

impl RestProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RestProtocol::Http1 => "http1",
            RestProtocol::Http2 => "http2",
        }
    }
}

type Body = Full<Bytes>;

enum Connections {
    /// One connection per worker, reopened when the server closed it.
    Http1(Vec<tokio::sync::Mutex<Option<http1::SendRequest<Body>>>>),
    Http2(Vec<http2::SendRequest<Body>>),
}

/// The REST client.
pub struct Rest {
    /// `host:port`.
    authority: String,
    authorization: http::HeaderValue,
    connections: Connections,
}

impl Rest {
    /// Connects to `http_url` (plain `http://host:port`): `workers` HTTP/1.1 connections or
    /// `connections` HTTP/2 ones.
    pub async fn connect(
        http_url: &str,
        key: &str,
        protocol: RestProtocol,
        connections: usize,
        workers: usize,
    ) -> anyhow::Result<Rest> {
        let uri: http::Uri = http_url
            .parse()
            .with_context(|| format!("HTTP URL {http_url}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("the REST client speaks plain http:// only, not {http_url}");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("no host in {http_url}"))?
            .to_string();
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        let authorization = format!("Basic {basic}")
            .parse()
            .context("the API key is not a valid header value")?;
        let connections = match protocol {
            RestProtocol::Http1 => {
                let opened = futures::future::try_join_all(
                    (0..workers.max(1)).map(|_| connect_http1(&authority)),
                )
                .await?;
                Connections::Http1(
                    opened
                        .into_iter()
                        .map(|sender| tokio::sync::Mutex::new(Some(sender)))
                        .collect(),
                )
            }
            RestProtocol::Http2 => {
                let mut senders = Vec::new();
                for _ in 0..connections.max(1) {
                    senders.push(connect_http2(&authority).await?);
                }
                Connections::Http2(senders)
            }
        };
        Ok(Rest {
            authority,
            authorization,
            connections,
        })
    }

    /// POSTs a form to `path` and reads the whole response; anything but 200 is an error.
    pub async fn post_form(
        &self,
        worker: usize,
        path: &str,
        form: String,
        idempotency_key: Option<&str>,
    ) -> Result<Bytes, String> {
        let request = |uri: String, host: bool| {
            let mut builder = http::Request::post(uri)
                .header(AUTHORIZATION, self.authorization.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(USER_AGENT, AGENT);
            if host {
                builder = builder.header(HOST, self.authority.as_str());
            }
            if let Some(key) = idempotency_key {
                builder = builder.header("idempotency-key", key);
            }
            builder
                .body(Full::new(Bytes::from(form.clone())))
                .map_err(|error| error.to_string())
        };
        match &self.connections {
            Connections::Http1(slots) => {
                let mut slot = slots[worker % slots.len()].lock().await;
                let sender = match slot.as_mut() {
                    Some(sender) if !sender.is_closed() => sender,
                    _ => {
                        *slot = None;
                        slot.insert(
                            connect_http1(&self.authority)
                                .await
                                .map_err(|error| format!("{error:#}"))?,
                        )
                    }
                };
                sender.ready().await.map_err(|error| error.to_string())?;
                let response = sender
                    .send_request(request(path.to_string(), true)?)
                    .await
                    .map_err(|error| error.to_string())?;
                read(response).await
            }
            Connections::Http2(senders) => {
                let mut sender = senders[worker % senders.len()].clone();
                sender.ready().await.map_err(|error| error.to_string())?;
                let uri = format!("http://{}{path}", self.authority);
                let response = sender
                    .send_request(request(uri, false)?)
                    .await
                    .map_err(|error| error.to_string())?;
                read(response).await
            }
        }
    }
}

async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Bytes, String> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    if status != http::StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("HTTP {status}: {text}"));
    }
    Ok(body)
}

async fn tcp(authority: &str) -> anyhow::Result<TokioIo<TcpStream>> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(authority))
        .await
        .with_context(|| format!("connecting to {authority} timed out"))?
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    Ok(TokioIo::new(stream))
}

async fn connect_http1(authority: &str) -> anyhow::Result<http1::SendRequest<Body>> {
    let (sender, connection) = http1::handshake(tcp(authority).await?).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn connect_http2(authority: &str) -> anyhow::Result<http2::SendRequest<Body>> {
    let (sender, connection) =
        http2::handshake(TokioExecutor::new(), tcp(authority).await?).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
