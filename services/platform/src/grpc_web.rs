//! gRPC-Web for browsers (the console, issue 20): every service's gRPC port also answers
//! gRPC-Web over HTTP/1.1 (tonic-web translates it to the same gRPC services, so the
//! browser uses the same APIs, authentication and tenant checks as any other client), and
//! answers CORS for the origins in `CENTRALITA_GRPC_WEB_ORIGINS` only.
//!
//! CORS is an explicit allow-list: no `*`, and no credentials (the console sends its token
//! in the `authorization` header, never in a cookie, so the browser has nothing ambient to
//! send on a forged request). With the list empty (the default) no origin is granted and
//! only same-origin pages (behind one ingress with the services) can call.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::ConfigError;

/// The CORS settings of the gRPC port.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrpcWebConfig {
    /// Comma-separated origins (`scheme://host[:port]`) whose pages may call the gRPC-Web
    /// API from a browser, e.g. the console's `http://127.0.0.1:9650`. Empty: none.
    #[arg(long = "grpc-web-origins", env = "CENTRALITA_GRPC_WEB_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub origins: Vec<String>,
}

/// Request headers a gRPC-Web client (connect-web, grpc-web) sends, besides the
/// CORS-safelisted ones.
const ALLOW_HEADERS: [&str; 7] =
    ["authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "traceparent", "tracestate"];
/// Response headers the browser may show the client: the status lives in them when a call
/// fails before any message (a trailers-only response).
const EXPOSE_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

impl GrpcWebConfig {
    /// Each origin must be `http(s)://host[:port]`: no wildcard, path, query or user info.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const SETTING: &str = "CENTRALITA_GRPC_WEB_ORIGINS";
        for origin in &self.origins {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .ok_or_else(|| ConfigError::new(SETTING, format!("`{origin}` must start with http:// or https://")))?;
            let host_ok = !rest.is_empty()
                && rest.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
                && !rest.starts_with(':');
            if !host_ok {
                return Err(ConfigError::new(
                    SETTING,
                    format!("`{origin}` must be scheme://host[:port] (no `*`, path, query or user info)"),
                ));
            }
            HeaderValue::from_str(origin)
                .map_err(|_| ConfigError::new(SETTING, format!("`{origin}` is not a valid header value")))?;
        }
        Ok(())
    }

    /// The CORS layer of the gRPC port: the configured origins, `POST` (and its preflight),
    /// the gRPC-Web request headers, the gRPC status headers exposed, preflights cached an
    /// hour. Origins are compared exactly, as the browser sends them.
    pub fn cors(&self) -> CorsLayer {
        let origins: Vec<HeaderValue> =
            self.origins.iter().filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()).collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers(ALLOW_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSE_HEADERS.map(HeaderName::from_static))
            .allow_credentials(false)
            .max_age(Duration::from_secs(3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(origins: &[&str]) -> GrpcWebConfig {
        GrpcWebConfig { origins: origins.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn origins_are_exact_scheme_host_port() {
        assert!(cfg(&[]).validate().is_ok());
        assert!(cfg(&["http://127.0.0.1:9650", "https://console.example.com", "http://[::1]:80"]).validate().is_ok());
        for bad in ["*", "http://*", "127.0.0.1:9650", "http://a/b", "https://u@h", "http://", "ftp://h", "http://h?x"]
        {
            let e = cfg(&[bad]).validate().unwrap_err();
            assert!(e.to_string().contains("CENTRALITA_GRPC_WEB_ORIGINS"), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_a_comma_separated_list_from_the_flag() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            web: GrpcWebConfig,
        }
        let c = Cmd::try_parse_from(["x", "--grpc-web-origins", "http://a:1,https://b"]).unwrap();
        assert_eq!(c.web.origins, ["http://a:1", "https://b"]);
        assert!(Cmd::try_parse_from(["x"]).unwrap().web.origins.is_empty());
    }
}
