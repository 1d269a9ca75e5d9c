//! Nonces any media replica can check without storing them: `nonce = hex(t) . hex(mac)`
//! where `t` is the issue time (Unix seconds) and `mac` the first 16 bytes of
//! HMAC-SHA256(key, `t ":" realm`). The key is shared by the replicas (kept in Redis by the
//! registrar), so a challenge from one replica is answered to another.
//!
//! A nonce is fresh for [`NONCE_LIFETIME`]; an older one with a good MAC is *stale* (the
//! client is challenged again with `stale=true` and answers without asking its user), one
//! with a bad MAC, for another realm, or from the future is not ours. Replays of a captured
//! REGISTER within the nonce's lifetime are caught by the registrar, which remembers each
//! accepted (nonce, cnonce, nc) in Redis for that lifetime (`store::Registrations::first_use`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::digest::constant_time_eq;

/// How long a nonce is fresh.
pub const NONCE_LIFETIME_SECS: u64 = 300;
/// Seconds of clock difference between replicas tolerated for a nonce "from the future".
const SKEW_SECS: u64 = 30;

/// The secret key of nonces (32 bytes). Never printed.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// What a nonce is, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
    NotOurs,
}

impl NonceKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From 64 hex digits.
    pub fn parse_hex(s: &str) -> Option<Self> {
        let s = s.trim().as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks(2).enumerate() {
            out[i] = ((pair[0] as char).to_digit(16)? * 16 + (pair[1] as char).to_digit(16)?) as u8;
        }
        Some(Self(out))
    }

    /// The value of a digest challenge (`WWW-Authenticate` or `Proxy-Authenticate`) for
    /// `realm` with a nonce issued now: MD5, `qop="auth"`, `stale=true` when asked.
    pub fn challenge(&self, realm: &str, now: u64, stale: bool) -> String {
        let mut value =
            format!("Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"", self.issue(realm, now));
        if stale {
            value.push_str(", stale=true");
        }
        value
    }

    fn mac(&self, t: u64, realm: &str) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(format!("{t}:{realm}").as_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A nonce for `realm` issued at `now` (Unix seconds).
    pub fn issue(&self, realm: &str, now: u64) -> String {
        let mac: String = self.mac(now, realm).iter().map(|b| format!("{b:02x}")).collect();
        format!("{now:016x}{mac}")
    }

    /// Whether `nonce` is one of ours for `realm`, and fresh at `now`.
    pub fn check(&self, nonce: &str, realm: &str, now: u64) -> Freshness {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return Freshness::NotOurs;
        }
        let Ok(t) = u64::from_str_radix(&nonce[..16], 16) else { return Freshness::NotOurs };
        let mac: String = self.mac(t, realm).iter().map(|b| format!("{b:02x}")).collect();
        if !constant_time_eq(mac.as_bytes(), nonce[16..].to_ascii_lowercase().as_bytes()) {
            return Freshness::NotOurs;
        }
        if t > now.saturating_add(SKEW_SECS) {
            Freshness::NotOurs
        } else if now.saturating_sub(t) > NONCE_LIFETIME_SECS {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_stale_and_bound_to_its_realm_and_key() {
        let key = NonceKey::new([7; 32]);
        let n = key.issue("acme.example", 1_000_000);
        assert_eq!(n.len(), 48);
        assert_eq!(key.check(&n, "acme.example", 1_000_000), Freshness::Fresh);
        assert_eq!(key.check(&n, "acme.example", 1_000_000 + NONCE_LIFETIME_SECS), Freshness::Fresh);
        assert_eq!(key.check(&n, "acme.example", 1_000_001 + NONCE_LIFETIME_SECS), Freshness::Stale);
        assert_eq!(key.check(&n, "globex.example", 1_000_000), Freshness::NotOurs, "another tenant's realm");
        assert_eq!(NonceKey::new([8; 32]).check(&n, "acme.example", 1_000_000), Freshness::NotOurs);
        assert_eq!(key.check(&n, "acme.example", 1_000_000 - SKEW_SECS - 1), Freshness::NotOurs, "from the future");
        // Another issue time under the same MAC is not ours.
        let forged = format!("{:016x}{}", 1_000_100u64, &n[16..]);
        assert_eq!(key.check(&forged, "acme.example", 1_000_100), Freshness::NotOurs);
        for bad in ["", "xyz", &n[..47], &format!("{n}0"), &"é".repeat(24)] {
            assert_eq!(key.check(bad, "acme.example", 1_000_000), Freshness::NotOurs, "{bad}");
        }
    }

    #[test]
    fn keys_parse_from_hex() {
        let hex = "00".repeat(31) + "ff";
        let mut bytes = [0u8; 32];
        bytes[31] = 0xff;
        assert_eq!(NonceKey::parse_hex(&hex).map(|k| k.0), Some(bytes));
        assert!(NonceKey::parse_hex("00").is_none());
        assert!(NonceKey::parse_hex(&"zz".repeat(32)).is_none());
        assert_eq!(format!("{:?}", NonceKey::new(bytes)), "NonceKey(..)");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_checked_without_panic(nonce in ".{0,80}", now in 0u64..u64::MAX) {
            let _ = NonceKey::new([1; 32]).check(&nonce, "acme.example", now);
        }
    }
}
