//! Page tokens of every `List` API (AIP-158): opaque to callers — hex of bytes only the
//! service reads — so a client can neither build nor read one, and the position inside
//! can change form without breaking clients. A token that is not hex, too long, or not
//! from the listing it is used with is INVALID_ARGUMENT on `page_token`.
//!
//! Not signed: a forged token only moves the cursor within a listing the caller may read
//! anyway.

use crate::error::Error;

fn bad() -> Error {
    Error::invalid("page_token", "is not a token from this API")
}

/// The token carrying `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `token` (at most `max_bytes` of them).
pub fn decode(token: &str, max_bytes: usize) -> Result<Vec<u8>, Error> {
    if !token.len().is_multiple_of(2) || token.len() > 2 * max_bytes {
        return Err(bad());
    }
    (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(bad)
}

/// Longest position a tagged token carries.
const MAX_POSITION: usize = 256;

/// A token for `position` in the listing named by `tag` (a short versioned name such as
/// `c1`): a token of one listing is refused by another.
pub fn tagged(tag: &str, position: &str) -> String {
    encode(format!("{tag}:{position}").as_bytes())
}

/// The position a token of listing `tag` names; `None` for the empty token (first page).
pub fn untag(tag: &str, token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = decode(token, tag.len() + 1 + MAX_POSITION)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let position = text.strip_prefix(tag).and_then(|t| t.strip_prefix(':')).ok_or_else(bad)?;
    Ok(Some(position.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_opaque_typed_and_checked() {
        for p in ["0", "1", "123456", "agent-7"] {
            let t = tagged("c1", p);
            assert!(!t.contains(':') && t != p, "{t}");
            assert_eq!(untag("c1", &t).unwrap().as_deref(), Some(p));
            assert!(untag("a1", &t).is_err(), "a token of one listing pages no other");
        }
        assert_eq!(untag("a1", "").unwrap(), None);
        for bad in ["5", "zz", "6331", "ffff", "+1", &"00".repeat(300)] {
            assert!(untag("c1", bad).is_err(), "{bad}");
        }
        assert_eq!(decode(&encode(&[0, 255, 16]), 3).unwrap(), [0, 255, 16]);
        assert!(decode(&encode(&[1, 2, 3, 4]), 3).is_err(), "longer than allowed");
    }
}
