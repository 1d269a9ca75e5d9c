//! The console server on an ephemeral port, spoken to over raw HTTP/1.1: the app's files and
//! its in-browser routes, the config the browser reads, and the development sign-in — off
//! by default, and when on, a token of exactly the tenant asked for, which the platform's
//! verifier accepts and which does not reach another tenant.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use centralita_console::signin::SignInResponse;
use centralita_console::Config;
use centralita_platform::auth::{Role, Verifier};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use clap::Parser as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn dist() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("console-dist-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>Centralita</title>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log('app')").unwrap();
    dir
}

/// The console's flags: a test dist and three endpoints, unless `extra` gives its own.
fn config(extra: &[&str]) -> Config {
    let dist = dist().display().to_string();
    let mut args = vec!["centralita-console".to_owned()];
    if !extra.contains(&"--dist") {
        args.extend(["--dist".to_owned(), dist]);
    }
    if !extra.contains(&"--endpoints") {
        args.extend([
            "--endpoints".to_owned(),
            "sessions=http://127.0.0.1:1,crm=http://127.0.0.1:2,reporting=http://127.0.0.1:3".to_owned(),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::try_parse_from(args).unwrap()
}

/// The app's and the admin port's addresses.
async fn start(config: Config) -> (SocketAddr, SocketAddr, Shutdown) {
    let prepared = config.validate().unwrap();
    let listeners = centralita_console::Listeners {
        app: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let (addr, admin) = (listeners.app.local_addr().unwrap(), listeners.admin.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(centralita_console::run(prepared, listeners, shutdown.clone()));
    (addr, admin, shutdown)
}

/// The value of `centralita_console_dev_sign_ins` for `outcome` on the admin port.
async fn sign_ins(admin: SocketAddr, outcome: &str) -> u64 {
    let (code, body) = http(admin, "GET", "/metrics", "").await;
    assert_eq!(code, 200);
    let prefix = format!("centralita_console_dev_sign_ins_total{{service=\"console\",outcome=\"{outcome}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {body}"))
        .parse()
        .unwrap()
}

/// (status code, body)
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await.unwrap().unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The status line and headers of a GET, header names lower-cased.
async fn raw_head(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let head = out.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn serves_the_app_and_its_config_with_sign_in_off_by_default() {
    let (addr, admin, shutdown) = start(config(&[])).await;
    assert_eq!(http(admin, "GET", "/readyz", "").await.0, 200);
    let (code, body) = http(addr, "GET", "/", "").await;
    assert_eq!(code, 200);
    assert!(body.contains("<title>Centralita</title>"), "{body}");
    let head = raw_head(addr, "/").await;
    for h in [
        "x-content-type-options: nosniff",
        "x-frame-options: DENY",
        "referrer-policy: no-referrer",
        "frame-ancestors 'none'",
        "connect-src 'self' http://127.0.0.1:2 http://127.0.0.1:3 http://127.0.0.1:1;",
    ] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    // An in-app route is the app too; an asset is itself.
    assert!(http(addr, "GET", "/wallboard", "").await.1.contains("<title>Centralita</title>"));
    assert_eq!(http(addr, "GET", "/assets/app.js", "").await.1, "console.log('app')");
    assert_eq!(http(addr, "GET", "/livez", "").await, (200, "ok".to_owned()));

    let (code, body) = http(addr, "GET", "/api/config", "").await;
    assert_eq!(code, 200);
    let cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["endpoints"]["sessions"], "http://127.0.0.1:1");
    assert_eq!(cfg["endpoints"]["reporting"], "http://127.0.0.1:3");
    assert_eq!(cfg["devSignIn"], false);
    let server_ms = cfg["serverTimeMs"].as_i64().unwrap();
    assert!((server_ms - chrono::Utc::now().timestamp_millis()).abs() < 5_000, "{server_ms}");

    let (code, body) = http(addr, "POST", "/api/dev/sign-in", r#"{"tenant":"acme","role":"supervisor"}"#).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("disabled"), "{body}");
    assert!(!body.contains("token\""), "{body}");
    assert_eq!(http(addr, "GET", "/api/nothing", "").await.0, 404);
    assert_eq!(sign_ins(admin, "disabled").await, 1);
    assert_eq!(sign_ins(admin, "minted").await, 0);
    shutdown.trigger();
}

#[tokio::test]
async fn dev_sign_in_mints_a_token_of_the_tenant_asked_for_only() {
    let key = repo("deploy/local/dev-keys/jwt-ed25519.key").display().to_string();
    let (addr, admin, shutdown) = start(config(&["--dev-sign-in", "true", "--private-key-file", &key])).await;
    let verifier =
        Verifier::from_file(&repo("deploy/local/dev-keys/jwt-ed25519.pub"), "centralita", "centralita-api").unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&http(addr, "GET", "/api/config", "").await.1).unwrap()["devSignIn"],
        true
    );

    let (code, body) =
        http(addr, "POST", "/api/dev/sign-in", r#"{"tenant":"acme","role":"agent","agentId":"ana-1"}"#).await;
    assert_eq!(code, 200, "{body}");
    let r: SignInResponse = serde_json::from_str(&body).unwrap();
    let caller = verifier.verify(&r.token).unwrap();
    assert_eq!(caller.tenant.as_ref().map(TenantId::as_str), Some("acme"));
    assert_eq!(caller.agent_id.as_deref(), Some("ana-1"));
    assert!(caller.has_role(Role::Agent) && !caller.is_bpo_admin());
    // Tenant A's token is not tenant B's.
    assert!(caller.authorize_tenant(&TenantId::parse("globex").unwrap()).is_err());
    assert!(caller.authorize_tenant(&TenantId::parse("acme").unwrap()).is_ok());
    assert!(r.expire_time > chrono::Utc::now().timestamp() + 3600);

    let (code, body) = http(addr, "POST", "/api/dev/sign-in", r#"{"tenant":"globex","role":"supervisor"}"#).await;
    assert_eq!(code, 200, "{body}");
    let sup = verifier.verify(&serde_json::from_str::<SignInResponse>(&body).unwrap().token).unwrap();
    assert_eq!(sup.tenant.as_ref().map(TenantId::as_str), Some("globex"));
    assert!(sup.has_role(Role::Supervisor) && sup.agent_id.is_none());

    // A BPO admin: every tenant, no tenant named.
    let (code, body) = http(addr, "POST", "/api/dev/sign-in", r#"{"role":"bpo_admin"}"#).await;
    assert_eq!(code, 200, "{body}");
    let bpo = verifier.verify(&serde_json::from_str::<SignInResponse>(&body).unwrap().token).unwrap();
    assert!(bpo.is_bpo_admin() && bpo.tenant.is_none() && bpo.agent_id.is_none());

    // Refusals: 400 with the field named, and no token.
    for (body, field) in [
        (r#"{"tenant":"acme","role":"bpo_admin"}"#, "tenant"),
        (r#"{"tenant":"acme","role":"tenant_admin"}"#, "role"),
        (r#"{"tenant":"Acme Corp","role":"supervisor"}"#, "tenant"),
        (r#"{"tenant":"acme","role":"agent"}"#, "agentId"),
        (r#"{"tenant":"acme","role":"supervisor","roles":["bpo_admin"]}"#, "body"),
        (r#"{"tenant":"#, "body"),
        ("", "body"),
    ] {
        let (code, reply) = http(addr, "POST", "/api/dev/sign-in", body).await;
        assert_eq!(code, 400, "{body}: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["field"], field, "{body}: {reply}");
        assert!(v.get("token").is_none());
    }
    assert_eq!((sign_ins(admin, "minted").await, sign_ins(admin, "refused").await), (3, 7));
    shutdown.trigger();
}

#[test]
fn configuration_is_checked_once_at_start() {
    let refused = |extra: &[&str], setting: &str| {
        let e = config(extra).validate().unwrap_err().to_string();
        assert!(e.contains(setting), "{extra:?}: {e}");
    };
    refused(&["--dev-sign-in", "true"], "CENTRALITA_JWT_PRIVATE_KEY_FILE");
    refused(&["--dev-sign-in", "true", "--private-key-file", "/nonexistent"], "CENTRALITA_JWT_PRIVATE_KEY_FILE");
    refused(&["--endpoints", "sessions=http://h:1,crm=http://h:2"], "CENTRALITA_CONSOLE_ENDPOINTS");
    refused(&["--endpoints", "sessions=h:1,crm=http://h:2,reporting=http://h:3"], "CENTRALITA_CONSOLE_ENDPOINTS");
    refused(
        &["--endpoints", "sessions=http://h:1,crm=http://h:2,reporting=http://h:3,billing=http://h:4"],
        "CENTRALITA_CONSOLE_ENDPOINTS",
    );
    refused(
        &["--endpoints", "sessions=http://h/x,crm=http://h:2,reporting=http://h:3"],
        "CENTRALITA_CONSOLE_ENDPOINTS",
    );
    refused(&["--dist", "/nonexistent"], "CENTRALITA_CONSOLE_DIST");
    refused(&["--dev-token-ttl", "48h"], "CENTRALITA_CONSOLE_DEV_TOKEN_TTL");
    // The identity provider: https, or http on loopback only; no query or fragment.
    for issuer in [
        "http://idp.example",
        "ftp://idp.example",
        "https://idp.example?x=1",
        "https://idp.example/#a",
        "https://",
        "https://idp.example:0",
        "https://idp .example",
    ] {
        refused(&["--oidc-issuer", issuer], "CENTRALITA_CONSOLE_OIDC_ISSUER");
    }
    fn idp<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["--oidc-issuer", "https://idp.example/realms/bpo"], extra].concat()
    }
    refused(&idp(&["--oidc-client-id", "a b"]), "CENTRALITA_CONSOLE_OIDC_CLIENT_ID");
    refused(&idp(&["--oidc-scope", "profile email"]), "CENTRALITA_CONSOLE_OIDC_SCOPE");
    refused(&idp(&["--oidc-resource", "centralita-api"]), "CENTRALITA_CONSOLE_OIDC_RESOURCE");
    refused(&idp(&["--oidc-resource", "https://api.example/#x"]), "CENTRALITA_CONSOLE_OIDC_RESOURCE");
    let oidc = config(&idp(&["--oidc-resource", "urn:centralita:api"])).validate().unwrap().oidc.unwrap();
    assert_eq!(
        (oidc.origin.as_str(), oidc.client_id.as_str(), oidc.scope.as_str(), oidc.resource.as_str()),
        ("https://idp.example", "centralita-console", "openid profile", "urn:centralita:api")
    );
    for (issuer, origin) in [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:1/x", "http://localhost:1"),
        ("https://[::1]:443/a/b", "https://[::1]:443"),
    ] {
        assert_eq!(config(&["--oidc-issuer", issuer]).validate().unwrap().oidc.unwrap().origin, origin);
    }
    assert!(config(&[]).validate().unwrap().oidc.is_none());
    assert!(config(&[]).validate().is_ok());
}

#[tokio::test]
async fn the_identity_provider_is_in_the_config_and_the_pages_policy() {
    let extra = ["--oidc-issuer", "https://idp.example/realms/bpo", "--oidc-resource", "urn:centralita:api"];
    let (addr, _admin, shutdown) = start(config(&extra)).await;
    let cfg: serde_json::Value = serde_json::from_str(&http(addr, "GET", "/api/config", "").await.1).unwrap();
    assert_eq!(
        cfg["oidc"],
        serde_json::json!({
            "issuer": "https://idp.example/realms/bpo",
            "clientId": "centralita-console",
            "scope": "openid profile",
            "resource": "urn:centralita:api",
        })
    );
    let head = raw_head(addr, "/").await;
    assert!(head.contains("http://127.0.0.1:1 https://idp.example;"), "{head}");
    shutdown.trigger();
    // Without one, the config says so.
    let (addr, _admin, shutdown) = start(config(&[])).await;
    let cfg: serde_json::Value = serde_json::from_str(&http(addr, "GET", "/api/config", "").await.1).unwrap();
    assert!(cfg["oidc"].is_null(), "{cfg}");
    shutdown.trigger();
}
