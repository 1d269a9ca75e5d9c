//! The web chat channel's widget (`spec.webchat`): the widget key a tenant's website embeds,
//! the origins (sites) allowed to open chats with it, and the queue its chats join.
//!
//! The widget key is public by design (it sits in the page's JavaScript, like Chatwoot's
//! website token): it names the tenant's widget, it does not authenticate anyone. What keeps
//! other sites out is the origin allow-list, which browsers enforce on the `Origin` header
//! they send; each chat is then bound to a signed visitor token minted by media.

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::error::FieldViolation;

/// At most this many allowed origins a tenant.
pub const MAX_ORIGINS: usize = 50;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebChatSpec {
    /// The key the tenant's widget is embedded with: 16 to 64 of A-Z, a-z, 0-9, `_` and `-`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_-]{16,64}$")))]
    pub widget_key: String,
    /// Origins (`https://www.example.com`, `http://localhost:8000`) allowed to open chats:
    /// scheme, host and optional port, nothing else.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The queue (of `spec.routing.queues`) a chat joins.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub queue: String,
}

/// The web chat widget of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebChat {
    pub widget_key: String,
    /// Normalised origins (lower case, no default port).
    pub allowed_origins: Vec<String>,
    pub queue: String,
}

impl WebChat {
    /// Whether `origin` (the browser's `Origin` header) may open chats.
    pub fn allows(&self, origin: &str) -> bool {
        normalise_origin(origin).is_ok_and(|o| self.allowed_origins.contains(&o))
    }
}

/// `scheme://host[:port]` in lower case without the scheme's default port; refuses paths,
/// queries, user info, wildcards, IPv6 literals and other schemes.
pub fn normalise_origin(s: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not an origin (`https://host` or `http://host:port`, nothing after)");
    let lower = s.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return Err(bad()),
    };
    // Host names and IPv4 addresses; IPv6 literals are not taken.
    let (host, port) = match rest.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_ok || !port_ok {
        return Err(bad());
    }
    Ok(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

fn is_widget_key(s: &str) -> bool {
    (16..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl WebChatSpec {
    /// The widget, or violations under `spec.webchat`. `queues` says whether a queue is the
    /// tenant's; `chat` whether the chat channel is enabled.
    pub fn validate(&self, queues: impl Fn(&str) -> bool, chat: bool, v: &mut Vec<FieldViolation>) -> Option<WebChat> {
        let before = v.len();
        let mut bad = |field: &str, msg: String| v.push(FieldViolation::new(field, msg));
        if !chat {
            bad("spec.webchat", "needs the chat channel in spec.channels".into());
        }
        if !is_widget_key(&self.widget_key) {
            bad("spec.webchat.widgetKey", "must be 16 to 64 of A-Z, a-z, 0-9, _ and -".into());
        }
        if self.allowed_origins.is_empty() {
            bad("spec.webchat.allowedOrigins", "must name at least one origin".into());
        }
        if self.allowed_origins.len() > MAX_ORIGINS {
            bad("spec.webchat.allowedOrigins", format!("at most {MAX_ORIGINS} origins"));
        }
        let mut origins = Vec::new();
        for (i, o) in self.allowed_origins.iter().enumerate() {
            match normalise_origin(o) {
                Ok(n) if origins.contains(&n) => {
                    bad(&format!("spec.webchat.allowedOrigins[{i}]"), format!("`{o}` is listed twice"))
                }
                Ok(n) => origins.push(n),
                Err(e) => bad(&format!("spec.webchat.allowedOrigins[{i}]"), e),
            }
        }
        if !queues(&self.queue) {
            bad("spec.webchat.queue", format!("`{}` is not a queue of spec.routing.queues", self.queue));
        }
        (v.len() == before).then(|| WebChat {
            widget_key: self.widget_key.clone(),
            allowed_origins: origins,
            queue: self.queue.clone(),
        })
    }
}

impl From<&WebChat> for WebChatSpec {
    fn from(w: &WebChat) -> Self {
        WebChatSpec {
            widget_key: w.widget_key.clone(),
            allowed_origins: w.allowed_origins.clone(),
            queue: w.queue.clone(),
        }
    }
}

impl From<&WebChat> for pb::WebChatConfig {
    fn from(w: &WebChat) -> Self {
        pb::WebChatConfig {
            widget_key: w.widget_key.clone(),
            allowed_origins: w.allowed_origins.clone(),
            queue: w.queue.clone(),
        }
    }
}

impl From<pb::WebChatConfig> for WebChatSpec {
    fn from(w: pb::WebChatConfig) -> Self {
        WebChatSpec { widget_key: w.widget_key, allowed_origins: w.allowed_origins, queue: w.queue }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_or_refused() {
        assert_eq!(normalise_origin("https://www.Example.com").as_deref(), Ok("https://www.example.com"));
        assert_eq!(normalise_origin("https://shop.example:443").as_deref(), Ok("https://shop.example"));
        assert_eq!(normalise_origin("http://localhost:8000").as_deref(), Ok("http://localhost:8000"));
        assert_eq!(normalise_origin("http://127.0.0.1:80").as_deref(), Ok("http://127.0.0.1"));
        for bad in [
            "",
            "www.example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://*.example.com",
            "https://user@example.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://example.com?x=1",
            "https://[::1]:8000",
            "null",
        ] {
            assert!(normalise_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn widgets_are_validated_with_field_paths() {
        let spec = WebChatSpec {
            widget_key: "wk_acme_0123456789".into(),
            allowed_origins: vec!["https://www.acme.example".into(), "http://localhost:8000".into()],
            queue: "support".into(),
        };
        let mut v = Vec::new();
        let w = spec.validate(|q| q == "support", true, &mut v).expect("valid");
        assert!(v.is_empty());
        assert!(w.allows("https://WWW.acme.example") && w.allows("http://localhost:8000"));
        assert!(!w.allows("https://evil.example") && !w.allows("http://www.acme.example") && !w.allows(""));
        let bad = WebChatSpec {
            widget_key: "short".into(),
            allowed_origins: vec!["https://a.example/x".into(), "https://b.example".into(), "https://B.example".into()],
            queue: "nowhere".into(),
        };
        let mut v = Vec::new();
        assert!(bad.validate(|q| q == "support", false, &mut v).is_none());
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.webchat",
                "spec.webchat.widgetKey",
                "spec.webchat.allowedOrigins[0]",
                "spec.webchat.allowedOrigins[2]",
                "spec.webchat.queue"
            ]
        );
        let mut v = Vec::new();
        let empty = WebChatSpec { allowed_origins: vec![], ..spec };
        assert!(empty.validate(|_| true, true, &mut v).is_none());
        assert_eq!(v[0].field, "spec.webchat.allowedOrigins");
    }
}
