//! Mutual TLS on a service's gRPC port (`centralita_platform::tls`), a runtime in-process
//! with certificates made by `deploy/local/tls-certs.sh` (openssl): a client with a
//! certificate the CA signed is served; one without a certificate, one whose certificate
//! another CA signed, and one speaking plain HTTP/2 are refused; rotated files are picked up
//! by the running server, and files that do not load leave the previous certificate in use.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tls::{lazy_channel, Reload, Tls, TlsConfig};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn certs(dir: &Path, args: &[&str]) {
    let script = common::repo_file("deploy/local/tls-certs.sh");
    let out = std::process::Command::new(script).arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "tls-certs.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("centralita-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tls_config(dir: &Path, leaf: &str, ca: &Path) -> TlsConfig {
    TlsConfig {
        cert_file: Some(dir.join(format!("{leaf}.crt"))),
        key_file: Some(dir.join(format!("{leaf}.key"))),
        ca_file: Some(ca.to_owned()),
        reload_interval: Duration::from_secs(1),
    }
}

/// A runtime serving health over mutual TLS with `dir`'s `server` certificate.
async fn serve(dir: &Path) -> (std::net::SocketAddr, Shutdown, Arc<centralita_platform::metrics::Metrics>) {
    let mut config = common::config("test.tls.");
    // The discard port: refused at once, so no broker is needed.
    config.kafka.brokers = "127.0.0.1:9".into();
    config.tls = tls_config(dir, "server", &dir.join("ca.crt"));
    let shutdown = Shutdown::new();
    let listeners = Listeners::ephemeral().await.unwrap();
    let addr = listeners.grpc_addr();
    let runtime = Runtime::new("test", &config, shutdown.clone()).unwrap();
    let metrics = runtime.metrics.clone();
    tokio::spawn(runtime.serve(listeners, tonic::service::RoutesBuilder::default()));
    (addr, shutdown, metrics)
}

/// A health check over `tls` (a client's files), or plain HTTP/2 without.
async fn health(addr: std::net::SocketAddr, tls: Option<&Arc<Tls>>) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let channel = lazy_channel(&format!("{scheme}://127.0.0.1:{}", addr.port()), tls, |e| {
        e.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(3))
    })?;
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// The certificate the server presents to a client holding `client`'s files.
async fn presented(addr: std::net::SocketAddr, client: &TlsConfig) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(client.ca_file.as_ref().unwrap()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> =
        CertificateDer::pem_file_iter(client.cert_file.as_ref().unwrap()).unwrap().map(|c| c.unwrap()).collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(client.key_file.as_ref().unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

#[tokio::test]
async fn only_a_client_with_a_certificate_the_ca_signed_is_served() {
    let dir = scratch("refused");
    certs(&dir, &["ca"]);
    certs(&dir, &["leaf", "server"]);
    certs(&dir, &["leaf", "client"]);
    // Another CA, and a client it signed that trusts our CA (so only its own certificate is
    // what fails).
    let rogue = dir.join("rogue");
    certs(&rogue, &["ca"]);
    certs(&rogue, &["leaf", "client"]);
    let (addr, shutdown, _) = serve(&dir).await;

    let good = Tls::from_config(&tls_config(&dir, "client", &dir.join("ca.crt"))).unwrap().unwrap();
    assert_eq!(health(addr, Some(&good)).await, Ok(()));

    let other_ca = Tls::from_config(&tls_config(&rogue, "client", &dir.join("ca.crt"))).unwrap().unwrap();
    let refused = health(addr, Some(&other_ca)).await.unwrap_err();
    assert!(refused.starts_with("Unavailable") || refused.starts_with("Unknown"), "{refused}");

    let plain = health(addr, None).await.unwrap_err();
    assert!(plain.starts_with("Unavailable") || plain.starts_with("Unknown"), "{plain}");

    // TLS without a client certificate: the handshake itself fails.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap()).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let outcome = async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(anonymous))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await?;
        // TLS 1.3: the client finishes first; the server's refusal arrives as an alert.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut buf = [0u8; 64];
        s.read(&mut buf).await
    }
    .await;
    assert!(
        matches!(&outcome, Err(e) if e.to_string().contains("CertificateRequired") || e.to_string().contains("certificate")),
        "{outcome:?}"
    );
    // The server still serves a good client afterwards.
    assert_eq!(health(addr, Some(&good)).await, Ok(()));
    shutdown.trigger();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_rotated_certificate_is_picked_up_without_a_restart() {
    let dir = scratch("rotation");
    certs(&dir, &["ca"]);
    certs(&dir, &["leaf", "server"]);
    certs(&dir, &["leaf", "client"]);
    let (addr, shutdown, metrics) = serve(&dir).await;
    let client = tls_config(&dir, "client", &dir.join("ca.crt"));
    let first = der(&dir.join("server.crt"));
    assert_eq!(presented(addr, &client).await, first);

    // Files that do not load (a key that is not the certificate's): the old pair stays.
    let old_key = std::fs::read(dir.join("server.key")).unwrap();
    certs(&dir, &["leaf", "spare"]);
    std::fs::copy(dir.join("spare.key"), dir.join("server.key")).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(presented(addr, &client).await, first, "a mismatched key replaced the certificate in use");
    let exported = metrics_text(&metrics);
    assert!(exported.contains(r#"centralita_tls_reloads_total{service="test",result="failed"}"#), "{exported}");
    std::fs::write(dir.join("server.key"), old_key).unwrap();

    // cert-manager renews: a new key and certificate from the same CA.
    certs(&dir, &["leaf", "server"]);
    let second = der(&dir.join("server.crt"));
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if presented(addr, &client).await == second {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated certificate was not picked up in 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exported = metrics_text(&metrics);
    assert!(exported.contains(r#"centralita_tls_reloads_total{service="test",result="reloaded"}"#), "{exported}");

    // A new CA: the server and the client each get a certificate it signed, and the files
    // of both are rotated; calls go on with the new ones only.
    let client_tls = Tls::from_config(&client).unwrap().unwrap();
    certs(&dir, &["ca"]);
    certs(&dir, &["leaf", "server"]);
    certs(&dir, &["leaf", "client"]);
    // A client reads its files again the same way (a service's runtime does it on its timer).
    assert_eq!(client_tls.reload(), Reload::Reloaded);
    assert_eq!(client_tls.reload(), Reload::Unchanged);
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(addr, Some(&client_tls)).await.is_err() {
        assert!(Instant::now() < deadline, "the new CA was not picked up in 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(presented(addr, &client).await, der(&dir.join("server.crt")));
    shutdown.trigger();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_settings_are_all_three_or_none() {
    let dir = scratch("settings");
    let half = TlsConfig { key_file: None, ..tls_config(&dir, "x", &dir.join("ca.crt")) };
    let e = half.validate().unwrap_err().to_string();
    assert!(e.contains("CENTRALITA_TLS_KEY_FILE") && e.contains("all three"), "{e}");
    let fast = TlsConfig { reload_interval: Duration::from_millis(10), ..TlsConfig::default() };
    assert!(fast.validate().unwrap_err().to_string().contains("CENTRALITA_TLS_RELOAD_INTERVAL"));
    assert!(TlsConfig::default().validate().is_ok());
    // Files that are missing or not what they claim: a clear error, no start.
    let missing = Tls::from_config(&tls_config(&dir, "x", &dir.join("ca.crt"))).unwrap_err().to_string();
    assert!(missing.contains("x.crt"), "{missing}");
    std::fs::write(dir.join("x.crt"), "not a certificate").unwrap();
    std::fs::write(dir.join("x.key"), "not a key").unwrap();
    std::fs::write(dir.join("ca.crt"), "not a CA").unwrap();
    let garbage = Tls::from_config(&tls_config(&dir, "x", &dir.join("ca.crt"))).unwrap_err().to_string();
    assert!(garbage.contains("certificate file"), "{garbage}");
    // With TLS off an https:// endpoint is refused, with TLS on an http:// one.
    assert!(lazy_channel("https://sessions:50051", None, |e| e).unwrap_err().contains("CENTRALITA_TLS"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn metrics_text(metrics: &centralita_platform::metrics::Metrics) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &metrics.registry.lock().unwrap()).unwrap();
    out
}
