//! A tenant file (CLI `admin tenant apply -f`, the operator's `Tenant` resources).
#![no_main]
use centralita_platform::tenant::TenantManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("a fixed time");
    match TenantManifest::parse_all(&text, now) {
        Ok(tenants) => assert!(!tenants.is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
