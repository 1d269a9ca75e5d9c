//! HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 2617 §3.2.2, RFC 7616
//! §3.4.1), MD5 with `qop=auth` only: pure functions over the parameters of an
//! `Authorization` header (as the SIP stack's tokenizer splits them) and an HA1.
//!
//! The registrar stores no password: only `HA1 = MD5(username ":" realm ":" password)` in
//! hex, which is what the response is checked against:
//! `response = MD5(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" MD5(method ":" digest-uri))`.
//! Every value is hashed as the client sent it (the `uri`, `nc` and `cnonce` strings
//! unchanged), and the comparison takes the same time wherever the strings differ.

use md5::{Digest, Md5};

/// An agent's `HA1` (`MD5(username:realm:password)`), 16 bytes. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Ha1([u8; 16]);

impl std::fmt::Debug for Ha1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ha1(..)")
    }
}

impl Ha1 {
    /// Computes it from a password (tests and tooling: media itself never sees passwords).
    pub fn of(username: &str, realm: &str, password: &str) -> Self {
        Self(Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).into())
    }

    /// Reads 32 hex digits (either case; surrounding white space, such as a file's final
    /// newline, ignored).
    pub fn parse_hex(s: &str) -> Option<Self> {
        let s = s.trim().as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5_hex(s: &str) -> String {
    hex(&Md5::digest(s.as_bytes()))
}

/// What an `Authorization: Digest …` header says, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

/// Why an `Authorization` header is not one we can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("not the Digest scheme")]
    NotDigest,
    #[error("no `{0}` parameter")]
    Missing(&'static str),
    #[error("`{0}` given twice")]
    Repeated(String),
    #[error("not a scheme followed by name=value parameters")]
    Unreadable,
}

impl Credentials {
    /// From the header's scheme and parameters (names compared without case, values
    /// unquoted by the tokenizer).
    pub fn from_params(scheme: &str, params: &[(String, String)]) -> Result<Self, CredentialsError> {
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut seen: Vec<String> = Vec::new();
        for (k, _) in params {
            let k = k.to_ascii_lowercase();
            if seen.contains(&k) {
                return Err(CredentialsError::Repeated(k));
            }
            seen.push(k);
        }
        let get = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let need = |name: &'static str| get(name).ok_or(CredentialsError::Missing(name));
        Ok(Self {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?,
            algorithm: get("algorithm"),
            qop: get("qop"),
            nc: get("nc"),
            cnonce: get("cnonce"),
            opaque: get("opaque"),
        })
    }
}

/// Why a response is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// An algorithm other than MD5, or a `qop` other than `auth` (what is challenged).
    Unsupported,
    /// `qop=auth` without a well-formed `nc` (8 hex digits) or with an empty `cnonce`.
    Malformed,
    /// The response is not the one the HA1 gives.
    Wrong,
}

/// The response the client should have sent for `method`, given `ha1` (RFC 2617 §3.2.2.1;
/// without `qop`, RFC 2069's form).
pub fn expected_response(ha1: &Ha1, method: &str, c: &Credentials) -> String {
    let ha2 = md5_hex(&format!("{method}:{}", c.uri));
    match (&c.qop, &c.nc, &c.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => md5_hex(&format!("{}:{}:{nc}:{cnonce}:{qop}:{ha2}", ha1.hex(), c.nonce)),
        _ => md5_hex(&format!("{}:{}:{ha2}", ha1.hex(), c.nonce)),
    }
}

/// Checks `c` for `method` against `ha1`, requiring MD5 and `qop=auth` (what the registrar
/// challenges with).
pub fn verify(ha1: &Ha1, method: &str, c: &Credentials) -> Result<(), Mismatch> {
    if c.algorithm.as_deref().is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
        return Err(Mismatch::Unsupported);
    }
    if !c.qop.as_deref().is_some_and(|q| q.eq_ignore_ascii_case("auth")) {
        return Err(Mismatch::Unsupported);
    }
    let nc_ok = c.nc.as_deref().is_some_and(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_hexdigit()));
    if !nc_ok || c.cnonce.as_deref().is_none_or(str::is_empty) {
        return Err(Mismatch::Malformed);
    }
    let expected = expected_response(ha1, method, c);
    if constant_time_eq(expected.as_bytes(), c.response.to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(Mismatch::Wrong)
    }
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(
        username: &str,
        realm: &str,
        nonce: &str,
        uri: &str,
        nc: &str,
        cnonce: &str,
        response: &str,
    ) -> Credentials {
        Credentials {
            username: username.into(),
            realm: realm.into(),
            nonce: nonce.into(),
            uri: uri.into(),
            response: response.into(),
            algorithm: None,
            qop: Some("auth".into()),
            nc: Some(nc.into()),
            cnonce: Some(cnonce.into()),
            opaque: None,
        }
    }

    /// RFC 2617 §3.5's worked example (its errata: the password is "Circle Of Life").
    #[test]
    fn rfc_2617_example() {
        let ha1 = Ha1::of("Mufasa", "testrealm@host.com", "Circle Of Life");
        let c = creds(
            "Mufasa",
            "testrealm@host.com",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "/dir/index.html",
            "00000001",
            "0a4f113b",
            "6629fae49393a05397450978507c4ef1",
        );
        assert_eq!(expected_response(&ha1, "GET", &c), "6629fae49393a05397450978507c4ef1");
        assert_eq!(verify(&ha1, "GET", &c), Ok(()));
        // The same response for another method, URI or password does not pass.
        assert_eq!(verify(&ha1, "POST", &c), Err(Mismatch::Wrong));
        assert_eq!(verify(&Ha1::of("Mufasa", "testrealm@host.com", "Circle of Life"), "GET", &c), Err(Mismatch::Wrong));
        let other_uri = Credentials { uri: "/dir/other.html".into(), ..c.clone() };
        assert_eq!(verify(&ha1, "GET", &other_uri), Err(Mismatch::Wrong));
    }

    /// RFC 7616 §3.9.1's MD5 example.
    #[test]
    fn rfc_7616_md5_example() {
        let ha1 = Ha1::of("Mufasa", "http-auth@example.org", "Circle of Life");
        let c = Credentials {
            algorithm: Some("MD5".into()),
            opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS".into()),
            ..creds(
                "Mufasa",
                "http-auth@example.org",
                "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                "/dir/index.html",
                "00000001",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                "8ca523f5e9506fed4657c9700eebdbec",
            )
        };
        assert_eq!(expected_response(&ha1, "GET", &c), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(verify(&ha1, "GET", &c), Ok(()));
        let next = Credentials { nc: Some("00000002".into()), ..c.clone() };
        assert_eq!(verify(&ha1, "GET", &next), Err(Mismatch::Wrong), "nc is hashed as sent");
    }

    #[test]
    fn only_md5_with_qop_auth_is_accepted() {
        let ha1 = Ha1::of("alice", "acme.example", "pw");
        let mut c = creds("alice", "acme.example", "n", "sip:acme.example", "00000001", "c", "");
        c.response = expected_response(&ha1, "REGISTER", &c);
        assert_eq!(verify(&ha1, "REGISTER", &c), Ok(()));
        let upper = Credentials { response: c.response.to_ascii_uppercase(), ..c.clone() };
        assert_eq!(verify(&ha1, "REGISTER", &upper), Ok(()), "hex compared without case");
        let sha = Credentials { algorithm: Some("SHA-256".into()), ..c.clone() };
        assert_eq!(verify(&ha1, "REGISTER", &sha), Err(Mismatch::Unsupported));
        let int = Credentials { qop: Some("auth-int".into()), ..c.clone() };
        assert_eq!(verify(&ha1, "REGISTER", &int), Err(Mismatch::Unsupported));
        // RFC 2069's form (no qop) is not what we challenge with.
        let old = Credentials { qop: None, nc: None, cnonce: None, ..c.clone() };
        let old = Credentials { response: expected_response(&ha1, "REGISTER", &old), ..old };
        assert_eq!(verify(&ha1, "REGISTER", &old), Err(Mismatch::Unsupported));
        for nc in ["1", "0000000g", "000000001"] {
            let bad = Credentials { nc: Some(nc.into()), ..c.clone() };
            assert_eq!(verify(&ha1, "REGISTER", &bad), Err(Mismatch::Malformed), "{nc}");
        }
        let no_cnonce = Credentials { cnonce: Some(String::new()), ..c.clone() };
        assert_eq!(verify(&ha1, "REGISTER", &no_cnonce), Err(Mismatch::Malformed));
    }

    #[test]
    fn ha1_hex_round_trips_and_never_prints() {
        let ha1 = Ha1::of("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(ha1.hex(), "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(Ha1::parse_hex("939E7578ED9E3C518A452ACEE763BCE9\n"), Some(ha1.clone()));
        assert_eq!(format!("{ha1:?}"), "Ha1(..)");
        for bad in [
            "",
            "939e",
            "939e7578ed9e3c518a452acee763bcez",
            "939e7578ed9e3c518a452acee763bce9aa",
            "é".repeat(16).as_str(),
        ] {
            assert_eq!(Ha1::parse_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_from_params() {
        let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let full = p(&[
            ("Username", "alice"),
            ("realm", "acme.example"),
            ("nonce", "n"),
            ("uri", "sip:acme.example"),
            ("response", "r"),
            ("qop", "auth"),
            ("nc", "00000001"),
            ("cnonce", "c"),
        ]);
        let c = Credentials::from_params("Digest", &full).expect("complete");
        assert_eq!((c.username.as_str(), c.nc.as_deref()), ("alice", Some("00000001")));
        assert_eq!(Credentials::from_params("Basic", &full), Err(CredentialsError::NotDigest));
        assert_eq!(Credentials::from_params("digest", &full[1..]), Err(CredentialsError::Missing("username")));
        let twice = [full.clone(), p(&[("USERNAME", "bob")])].concat();
        assert_eq!(Credentials::from_params("Digest", &twice), Err(CredentialsError::Repeated("username".into())));
    }

    proptest::proptest! {
        /// Any parameters: parsed or refused, and any response string: checked, never a panic.
        #[test]
        fn never_panics(params in proptest::collection::vec(("[a-zA-Z]{1,9}", ".{0,40}"), 0..12), response in ".{0,64}") {
            if let Ok(mut c) = Credentials::from_params("Digest", &params) {
                c.response = response;
                let _ = verify(&Ha1::of("a", "b", "c"), "REGISTER", &c);
            }
        }
    }
}
