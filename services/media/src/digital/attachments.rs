//! The files of conversations, pure: which types are taken, how large, what a file's name
//! may be, and the check that a file's bytes are of the type it claims (so a page of HTML
//! or a program never reaches an agent's or a customer's browser labelled as an image). No
//! I/O here.
//!
//! Taken: JPEG, PNG, GIF and WebP images, PDF, plain text (UTF-8), MP3 and Ogg audio and
//! MP4 video, up to [`MAX_BYTES`]. Everything else (HTML, SVG, scripts, archives, Office
//! documents with macros, executables) is refused: it is what a contact center's customers
//! send (photos of a receipt, a PDF invoice, a voice note) and nothing a browser would run.

use sha2::{Digest, Sha256};

/// The largest file: 5 MiB.
pub const MAX_BYTES: usize = 5 * 1024 * 1024;

/// The longest file name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// The media types taken.
pub const ALLOWED: [&str; 9] = [
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
];

/// A file that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub name: String,
    pub content_type: String,
    pub sha256: String,
}

/// Why a file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Empty,
    TooLarge,
    BadName,
    /// The type is not one of [`ALLOWED`].
    ForbiddenType(String),
    /// The bytes are not of the type claimed.
    NotOfType(String),
}

impl Refusal {
    /// The field of the request it is about.
    pub fn field(&self) -> &'static str {
        match self {
            Refusal::Empty | Refusal::TooLarge | Refusal::NotOfType(_) => "data",
            Refusal::BadName => "file_name",
            Refusal::ForbiddenType(_) => "content_type",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Refusal::Empty => "the file is empty".into(),
            Refusal::TooLarge => format!("the file is larger than {} MiB", MAX_BYTES / (1024 * 1024)),
            Refusal::BadName => format!(
                "must be 1 to {MAX_NAME_BYTES} bytes, without path separators, control characters or a leading dot"
            ),
            Refusal::ForbiddenType(t) => format!("`{t}` files are not taken (allowed: {})", ALLOWED.join(", ")),
            Refusal::NotOfType(t) => format!("the bytes are not a `{t}` file"),
        }
    }
}

/// The media type without parameters, lowercase (`Image/PNG; x=y` → `image/png`).
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether `name` may name a file: not blank, at most [`MAX_NAME_BYTES`], no `/`, `\`,
/// control characters, or leading dot.
pub fn check_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && !name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
}

/// The file name to keep for a name a provider or a mail gave (anything): its last path
/// segment with control characters dropped, cut to the limit; `fallback` when nothing is
/// left.
pub fn clean_name(given: &str, fallback: &str) -> String {
    let last = given.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
    name = name.trim().trim_start_matches('.').to_owned();
    while name.len() > MAX_NAME_BYTES {
        name.pop();
    }
    if check_name(&name) {
        name
    } else {
        fallback.to_owned()
    }
}

/// Whether `data` is a file of `content_type` (one of [`ALLOWED`]), by its first bytes.
fn of_type(content_type: &str, data: &[u8]) -> bool {
    let starts = |p: &[u8]| data.starts_with(p);
    match content_type {
        "image/jpeg" => starts(&[0xFF, 0xD8, 0xFF]),
        "image/png" => starts(b"\x89PNG\r\n\x1a\n"),
        "image/gif" => starts(b"GIF87a") || starts(b"GIF89a"),
        "image/webp" => data.len() >= 12 && starts(b"RIFF") && &data[8..12] == b"WEBP",
        "application/pdf" => starts(b"%PDF-"),
        "audio/mpeg" => starts(b"ID3") || (data.len() >= 2 && data[0] == 0xFF && data[1] & 0xE0 == 0xE0),
        "audio/ogg" => starts(b"OggS"),
        "video/mp4" => data.len() >= 8 && &data[4..8] == b"ftyp",
        // Text: UTF-8 without NULs or other controls than whitespace (so not a binary
        // labelled text, nor markup a browser would render: served as text/plain with
        // nosniff, markup stays text).
        "text/plain" => std::str::from_utf8(data)
            .is_ok_and(|s| !s.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'))),
        _ => false,
    }
}

/// Checks a file: its name, its type (one of [`ALLOWED`]), its size, and that its bytes
/// are of that type. The type kept is the essence of the one given.
pub fn check(name: &str, content_type: &str, data: &[u8]) -> Result<Checked, Refusal> {
    if !check_name(name) {
        return Err(Refusal::BadName);
    }
    let t = essence(content_type);
    if !ALLOWED.contains(&t.as_str()) {
        return Err(Refusal::ForbiddenType(t.chars().take(100).collect()));
    }
    if data.is_empty() {
        return Err(Refusal::Empty);
    }
    if data.len() > MAX_BYTES {
        return Err(Refusal::TooLarge);
    }
    if !of_type(&t, data) {
        return Err(Refusal::NotOfType(t));
    }
    Ok(Checked { name: name.to_owned(), content_type: t, sha256: sha256_hex(data) })
}

/// The usual file ending of a type files take (`bin` for any other), for the name of a file
/// a provider sends without one.
pub fn extension(content_type: &str) -> &'static str {
    match essence(content_type).as_str() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "video/mp4" => "mp4",
        _ => "bin",
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn files_of_the_allowed_types_pass_with_their_digest() {
        let c = check("receipt.png", "Image/PNG; charset=x", PNG).expect("a png");
        assert_eq!((c.name.as_str(), c.content_type.as_str()), ("receipt.png", "image/png"));
        assert_eq!(c.sha256, sha256_hex(PNG));
        assert_eq!(c.sha256.len(), 64);
        let samples: [(&str, &[u8]); 9] = [
            ("image/jpeg", b"\xFF\xD8\xFF\xE0\0\x10JFIF"),
            ("image/png", PNG),
            ("image/gif", b"GIF89a\x01\0\x01\0"),
            ("image/webp", b"RIFF\x24\0\0\0WEBPVP8 "),
            ("application/pdf", b"%PDF-1.7\n"),
            ("text/plain", "Factura n\u{ba} 12\r\n\tgracias\n".as_bytes()),
            ("audio/mpeg", b"ID3\x04\0\0"),
            ("audio/ogg", b"OggS\0\x02"),
            ("video/mp4", b"\0\0\0\x18ftypmp42"),
        ];
        for (t, data) in samples {
            assert!(check("f", t, data).is_ok(), "{t}");
        }
    }

    #[test]
    fn forbidden_types_mislabelled_bytes_and_sizes_are_refused_with_their_field() {
        let refusal = |n: &str, t: &str, d: &[u8]| check(n, t, d).expect_err("refused");
        for t in ["text/html", "image/svg+xml", "application/x-msdownload", "application/javascript", "", "*/*"] {
            let r = refusal("f", t, b"<html>");
            assert!(matches!(r, Refusal::ForbiddenType(_)), "{t}");
            assert_eq!(r.field(), "content_type");
        }
        assert_eq!(refusal("a.png", "image/png", b"<html><script>"), Refusal::NotOfType("image/png".into()));
        assert_eq!(refusal("a.pdf", "application/pdf", b"MZ\x90\0"), Refusal::NotOfType("application/pdf".into()));
        assert_eq!(refusal("a.txt", "text/plain", b"MZ\x90\0\x03"), Refusal::NotOfType("text/plain".into()));
        assert_eq!(refusal("a.png", "image/png", b""), Refusal::Empty);
        let mut big = PNG.to_vec();
        big.resize(MAX_BYTES + 1, 0);
        assert_eq!(refusal("a.png", "image/png", &big), Refusal::TooLarge);
        big.truncate(MAX_BYTES);
        assert!(check("a.png", "image/png", &big).is_ok(), "exactly the limit");
        for name in ["", " ", "../etc/passwd", "a\\b", ".htaccess", "a\nb", &"x".repeat(MAX_NAME_BYTES + 1)] {
            assert_eq!(refusal(name, "image/png", PNG), Refusal::BadName, "{name:?}");
        }
        assert!(Refusal::TooLarge.describe().contains("5 MiB"));
    }

    #[test]
    fn endings_of_the_types_taken() {
        assert_eq!(extension("image/jpeg"), "jpg");
        assert_eq!(extension("Audio/OGG; codecs=opus"), "ogg");
        assert_eq!(extension("application/zip"), "bin");
        assert!(ALLOWED.iter().all(|t| extension(t) != "bin"), "every type taken has its ending");
    }

    #[test]
    fn names_from_outside_are_cleaned() {
        assert_eq!(clean_name("C:\\Users\\ana\\factura.pdf", "file"), "factura.pdf");
        assert_eq!(clean_name("../../.bashrc", "file"), "bashrc");
        assert_eq!(clean_name("", "image.jpg"), "image.jpg");
        assert_eq!(clean_name("a\u{7}b.png", "file"), "ab.png");
        assert_eq!(clean_name(&"é".repeat(150), "file").len(), MAX_NAME_BYTES);
    }

    proptest! {
        #[test]
        fn any_input_is_judged_without_panicking(name in ".{0,300}", t in ".{0,40}", data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(c) = check(&name, &t, &data) {
                prop_assert!(ALLOWED.contains(&c.content_type.as_str()));
                prop_assert!(check_name(&c.name));
            }
            prop_assert!(check_name(&clean_name(&name, "file")));
        }
    }
}
