//! A file in a conversation: its name, claimed type and bytes, checked before it is kept.
#![no_main]
use centralita_media::digital::attachments;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 10] = [
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain; charset=utf-8",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
    "text/html",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len().min(24));
    let name = String::from_utf8_lossy(&rest[..split]);
    let body = rest.get(split + 1..).unwrap_or_default();
    let claimed = TYPES[usize::from(pick) % TYPES.len()];
    if let Ok(checked) = attachments::check(&name, claimed, body) {
        assert!(attachments::check_name(&name));
        let _ = checked;
    }
    let cleaned = attachments::clean_name(&name, "file");
    assert!(attachments::check_name(&cleaned), "clean_name gave a name check_name refuses: {cleaned:?}");
});
