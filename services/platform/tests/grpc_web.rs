//! gRPC-Web on a service's gRPC port, spoken byte for byte over HTTP/1.1 as a browser does:
//! a call from an allowed origin is answered with the CORS grant and the gRPC status
//! exposed; a disallowed origin gets no grant (preflight or call); the browser's calls go
//! through the same authentication and tenant checks as gRPC (another tenant's resource is
//! refused).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_proto::tenancy::v1 as pb;
use common::*;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALLOWED: &str = "http://console.test:9650";
const OTHER: &str = "http://evil.test:9650";

fn token(tenant: &str) -> String {
    Signer::from_file(&repo_file("deploy/local/dev-keys/jwt-ed25519.key"), "centralita", "centralita-api")
        .unwrap()
        .mint(&TokenRequest {
            subject: "agent".into(),
            tenant: Some(TenantId::parse(tenant).unwrap()),
            roles: vec![Role::Agent],
            agent_id: Some("agent-1".into()),
            ttl: Duration::from_secs(600),
        })
        .unwrap()
}

/// A raw HTTP/1.1 exchange: the head (status line and headers, lower-cased names) and the
/// body with any chunked transfer encoding removed.
struct Reply {
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
        })
    }

    /// gRPC-Web frames of the body: (flags, payload).
    fn frames(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut b = &self.body[..];
        while b.len() >= 5 {
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            out.push((b[0], b[5..5 + len].to_vec()));
            b = &b[5 + len..];
        }
        out
    }

    /// The call's grpc-status: from the trailer frame, or from the headers of a
    /// trailers-only answer.
    fn grpc_status(&self) -> Option<String> {
        let trailer = self.frames().into_iter().find(|(flags, _)| flags & 0x80 != 0).and_then(|(_, t)| {
            String::from_utf8(t).ok()?.lines().find_map(|l| l.strip_prefix("grpc-status:").map(|v| v.trim().to_owned()))
        });
        trailer.or_else(|| self.header("grpc-status"))
    }
}

async fn exchange(addr: SocketAddr, request: Vec<u8>) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut rest = &raw[split + 4..];
    let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body
    } else {
        rest.to_vec()
    };
    Reply { head, body }
}

async fn get_tenant(addr: SocketAddr, origin: &str, token: &str, name: &str) -> Reply {
    let msg = pb::GetTenantRequest { name: name.into() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let mut req = format!(
        "POST /centralita.tenancy.v1.TenantService/GetTenant HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    exchange(addr, req).await
}

async fn preflight(addr: SocketAddr, origin: &str) -> Reply {
    let req = format!(
        "OPTIONS /centralita.tenancy.v1.TenantService/GetTenant HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization,content-type,x-grpc-web,x-user-agent\r\n\
         Connection: close\r\n\r\n"
    );
    exchange(addr, req.into_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_from_an_allowed_origin_with_tenant_checks() {
    let prefix = unique("test.grpcweb.") + ".";
    let topics = Topics::new(prefix.clone());
    ensure_topics(&brokers(), 1, &[TopicSpec { name: topics.tenants(), partitions: 1, compacted: true }])
        .await
        .unwrap();
    let producer = Producer::new(&brokers(), None).unwrap();
    for id in ["acme", "globex"] {
        let t = tenant(id, 1000);
        producer.publish(&topics.tenants(), id, &Event::new(t.id.clone(), &pb::Tenant::from(&t))).await.unwrap();
    }

    let mut config = common::config(&prefix);
    config.grpc_web.origins = vec![ALLOWED.into()];
    let shutdown = Shutdown::new();
    let listeners = Listeners::ephemeral().await.unwrap();
    let addr = listeners.grpc_addr();
    let runtime = Runtime::new("test", &config, shutdown.clone()).unwrap();
    let served = tokio::spawn(runtime.serve(listeners, tonic::service::RoutesBuilder::default()));
    let acme = token("acme");

    // The call works over gRPC-Web once the tenant has arrived from the topic.
    let known = async || get_tenant(addr, ALLOWED, &acme, "tenants/acme").await.grpc_status().as_deref() == Some("0");
    assert!(eventually(Duration::from_secs(30), known).await, "gRPC-Web GetTenant never succeeded");

    let ok = get_tenant(addr, ALLOWED, &acme, "tenants/acme").await;
    assert!(ok.head.starts_with("HTTP/1.1 200"), "{}", ok.head);
    assert!(ok.header("content-type").unwrap().starts_with("application/grpc-web"), "{}", ok.head);
    assert_eq!(ok.header("access-control-allow-origin").as_deref(), Some(ALLOWED), "{}", ok.head);
    assert!(ok.header("access-control-allow-credentials").is_none(), "{}", ok.head);
    let exposed = ok.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"), "{exposed}");
    let data = ok.frames().into_iter().find(|(flags, _)| *flags == 0).unwrap().1;
    assert_eq!(pb::Tenant::decode(&data[..]).unwrap().display_name, "acme Inc");

    // Another tenant's resource: refused, exactly as over gRPC; no token: unauthenticated.
    let foreign = get_tenant(addr, ALLOWED, &acme, "tenants/globex").await;
    assert_eq!(foreign.grpc_status().as_deref(), Some("7"), "{} {:?}", foreign.head, foreign.body);
    assert!(!String::from_utf8_lossy(&foreign.body).contains("globex Inc"));
    let anonymous = get_tenant(addr, ALLOWED, "not-a-token", "tenants/acme").await;
    assert_eq!(anonymous.grpc_status().as_deref(), Some("16"), "{}", anonymous.head);

    // Preflight: granted to the allowed origin with the gRPC-Web headers, not to another.
    let pre = preflight(addr, ALLOWED).await;
    assert!(pre.head.starts_with("HTTP/1.1 200"), "{}", pre.head);
    assert_eq!(pre.header("access-control-allow-origin").as_deref(), Some(ALLOWED), "{}", pre.head);
    let allowed_headers = pre.header("access-control-allow-headers").unwrap();
    for h in ["authorization", "x-grpc-web", "content-type"] {
        assert!(allowed_headers.contains(h), "{allowed_headers}");
    }
    assert!(pre.header("access-control-allow-methods").unwrap().contains("POST"), "{}", pre.head);
    let denied = preflight(addr, OTHER).await;
    assert!(denied.header("access-control-allow-origin").is_none(), "{}", denied.head);

    // A disallowed origin's call gets no grant either, so its page cannot read the answer.
    let other = get_tenant(addr, OTHER, &acme, "tenants/acme").await;
    assert!(other.header("access-control-allow-origin").is_none(), "{}", other.head);

    shutdown.trigger();
    served.await.unwrap().unwrap();
}
