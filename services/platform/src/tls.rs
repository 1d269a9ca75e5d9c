//! Service-to-service TLS, mutual: every service's gRPC port asks its client for a
//! certificate signed by the platform's CA, and every service presents its own certificate
//! when it calls another one.
//!
//! Off unless `CENTRALITA_TLS_CERT_FILE`, `CENTRALITA_TLS_KEY_FILE` and
//! `CENTRALITA_TLS_CA_FILE` are all set (the chart mounts them from a Kubernetes Secret of
//! type `kubernetes.io/tls` with `ca.crt`, as cert-manager writes it). The three files are
//! read again every `CENTRALITA_TLS_RELOAD_INTERVAL`; when any of them changed, new
//! handshakes use what they hold now (connections already open keep theirs), so a rotated
//! certificate — or a rotated CA — is picked up without a restart. A change that does not
//! load (a half-written file, a key that is not the certificate's) is logged and counted,
//! and the previous certificate stays in use until the files load again.
//!
//! The admin port (`/livez`, `/readyz`, `/metrics`) stays plain HTTP: the kubelet's probes
//! and Prometheus reach it, and it carries no tenant data. The channel listeners facing
//! customers and providers (SIP, web chat, webhooks, SMTP) have TLS settings of their own.
//!
//! ```text
//! accept ─ TCP ─ handshake (own task, 10 s limit, client certificate verified) ─ tonic
//! connect ─ TCP ─ handshake (this service's certificate, the server's checked) ─ tonic
//! ```

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::config::{parse_duration, ConfigError};
use crate::shutdown::Shutdown;

/// How long a client may take over its handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_INTERVAL_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);

/// The TLS settings every service shares.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsConfig {
    /// PEM certificate chain this service presents, as a server and as a client of the
    /// others (its own first). With the key and CA files: mutual TLS on the gRPC port and
    /// to the other services.
    #[arg(long = "tls-cert-file", env = "CENTRALITA_TLS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key-file", env = "CENTRALITA_TLS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// PEM certificates of the CA(s) that sign the services' certificates: a client of the
    /// gRPC port must present one they signed, and so must a service called.
    #[arg(long = "tls-ca-file", env = "CENTRALITA_TLS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// How often the three files are read again for a rotation (1s to 1h).
    #[arg(long = "tls-reload-interval", env = "CENTRALITA_TLS_RELOAD_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    /// Off.
    fn default() -> Self {
        Self { cert_file: None, key_file: None, ca_file: None, reload_interval: Duration::from_secs(30) }
    }
}

impl TlsConfig {
    /// The three files, when TLS is on; a clear error when only some are set.
    pub fn files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.cert_file, &self.key_file, &self.ca_file) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                Ok(Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() }))
            }
            _ => Err(ConfigError::new(
                "CENTRALITA_TLS_CERT_FILE / CENTRALITA_TLS_KEY_FILE / CENTRALITA_TLS_CA_FILE",
                "set all three for mutual TLS, or none",
            )),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.files()?;
        if !RELOAD_INTERVAL_RANGE.contains(&self.reload_interval) {
            return Err(ConfigError::new("CENTRALITA_TLS_RELOAD_INTERVAL", "must be between 1s and 1h"));
        }
        Ok(())
    }
}

/// Where the certificate, its key and the CA are read from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The files' bytes as last read, to tell a rotation from nothing new.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl TlsFiles {
    fn read(&self) -> Result<Contents, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(Contents { cert: read(&self.cert)?, key: read(&self.key)?, ca: read(&self.ca)? })
    }
}

/// What one reading of the files gives: a server side and a client side.
struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Material {
    fn build(c: &Contents) -> Result<Self, String> {
        let certs = CertificateDer::pem_slice_iter(&c.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate file: {e}"))?;
        if certs.is_empty() {
            return Err("certificate file: no PEM certificate in it".into());
        }
        let key = PrivateKeyDer::from_pem_slice(&c.key).map_err(|e| format!("key file: {e}"))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&c.ca) {
            let ca = ca.map_err(|e| format!("CA file: {e}"))?;
            roots.add(ca).map_err(|e| format!("CA file: {e}"))?;
        }
        if roots.is_empty() {
            return Err("CA file: no PEM certificate in it".into());
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("CA file: {e}"))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("certificate and key: {e}"))?;
        // gRPC over HTTP/2; HTTP/1.1 for gRPC-Web through a proxy that holds a certificate.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("certificate and key: {e}"))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// The TLS state of a process: what the files held when they last loaded, read again on a
/// timer by [`Tls::watch`].
pub struct Tls {
    files: TlsFiles,
    every: Duration,
    current: RwLock<(Contents, Arc<Material>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).field("every", &self.every).finish_non_exhaustive()
    }
}

/// The outcome of one look at the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but do not load; the previous certificate stays in use.
    Failed(String),
}

impl Tls {
    /// The TLS state for `config`, when it turns TLS on. Fails when the files do not load:
    /// a service does not start with a certificate it cannot use.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        let Some(files) = config.files()? else { return Ok(None) };
        let setting = "CENTRALITA_TLS_CERT_FILE / CENTRALITA_TLS_KEY_FILE / CENTRALITA_TLS_CA_FILE";
        let contents = files.read().map_err(|e| ConfigError::new(setting, e))?;
        let material = Material::build(&contents).map_err(|e| ConfigError::new(setting, e))?;
        Ok(Some(Arc::new(Self {
            files,
            every: config.reload_interval,
            current: RwLock::new((contents, Arc::new(material))),
        })))
    }

    fn material(&self) -> Arc<Material> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    /// Reads the files again and takes what they hold when it changed and loads.
    pub fn reload(&self) -> Reload {
        let contents = match self.files.read() {
            Ok(c) => c,
            Err(e) => return Reload::Failed(e),
        };
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == contents {
            return Reload::Unchanged;
        }
        match Material::build(&contents) {
            Ok(m) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (contents, Arc::new(m));
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Reloads every interval until shutdown, logging each rotation and each failure
    /// (once per different content, not at every tick).
    pub async fn watch(self: Arc<Self>, metrics: Arc<crate::metrics::Metrics>, shutdown: Shutdown) {
        let mut last_failure: Option<String> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.wait() => return,
            }
            let me = self.clone();
            let outcome = match tokio::task::spawn_blocking(move || me.reload()).await {
                Ok(r) => r,
                Err(e) => Reload::Failed(e.to_string()),
            };
            match outcome {
                Reload::Unchanged => {}
                Reload::Reloaded => {
                    last_failure = None;
                    metrics.tls_reloads.get_or_create(&crate::metrics::ResultLabel { result: "reloaded" }).inc();
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate files changed: new connections use them");
                }
                Reload::Failed(e) => {
                    metrics.tls_reloads.get_or_create(&crate::metrics::ResultLabel { result: "failed" }).inc();
                    if last_failure.as_deref() != Some(e.as_str()) {
                        tracing::error!(error = %e, "TLS certificate files changed but do not load; the previous certificate stays in use");
                        last_failure = Some(e);
                    }
                }
            }
        }
    }

    /// The accepted TCP connections of `tcp` after their handshake, each in a task of its
    /// own so a slow or hostile client holds up no one else; a refused handshake (no
    /// certificate, one the CA did not sign, not TLS at all) closes its connection and is
    /// logged. Ends when the server stops taking connections.
    pub fn incoming(
        self: &Arc<Self>,
        mut tcp: impl Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
    ) -> impl Stream<Item = io::Result<TlsConnection>> {
        let (tx, rx) = mpsc::channel::<TlsConnection>(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = tcp.next() => a,
                    _ = tx.closed() => return,
                };
                let stream = match accepted {
                    None => return,
                    Some(Ok(s)) => s,
                    Some(Err(e)) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.material().server.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let peer = stream.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send(TlsConnection(s)).await;
                        }
                        Ok(Err(e)) => tracing::info!(?peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(?peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
    }

    /// A lazily connected channel to another service at `url` (`https://host:port`), over
    /// mutual TLS with this process's certificate; the server's must name `host` and be
    /// signed by the CA.
    fn channel(self: &Arc<Self>, url: &str, configure: impl FnOnce(Endpoint) -> Endpoint) -> Result<Channel, String> {
        let rest =
            url.strip_prefix("https://").ok_or_else(|| format!("`{url}`: TLS is on, so it must be an https:// URL"))?;
        // The scheme tonic sees is http: the TLS is this connector's, not tonic's.
        let endpoint = Endpoint::from_shared(format!("http://{rest}")).map_err(|e| format!("`{url}`: {e}"))?;
        if endpoint.uri().host().is_none_or(str::is_empty) {
            return Err(format!("`{url}`: no host"));
        }
        Ok(configure(endpoint).connect_with_connector_lazy(Connector { tls: self.clone() }))
    }
}

/// A lazily connected channel to another service: `http://host:port` without TLS,
/// `https://host:port` over mutual TLS when `tls` is on. Either way the other scheme is
/// refused, so a plain endpoint left in a TLS install (or the reverse) is found at start.
pub fn lazy_channel(
    url: &str,
    tls: Option<&Arc<Tls>>,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, String> {
    match tls {
        Some(tls) => tls.channel(url, configure),
        None => {
            if !url.starts_with("http://") {
                return Err(format!("`{url}`: must be an http:// URL (https:// needs CENTRALITA_TLS_* set)"));
            }
            Ok(configure(Endpoint::from_shared(url.to_owned()).map_err(|e| format!("`{url}`: {e}"))?).connect_lazy())
        }
    }
}

/// Connects to a service over TCP, then TLS with the current client certificate.
#[derive(Clone)]
struct Connector {
    tls: Arc<Tls>,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<hyper_util::rt::TokioIo<ClientStream>>> + Send>>;
type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<ClientStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.material().client.clone();
        Box::pin(async move {
            let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let host = uri.host().ok_or_else(|| invalid(format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// An accepted connection after its handshake.
#[derive(Debug)]
pub struct TlsConnection(tokio_rustls::server::TlsStream<TcpStream>);

impl TlsConnection {
    /// The client's certificate chain (its own first), as it presented it.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.0.get_ref().1.peer_certificates()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
