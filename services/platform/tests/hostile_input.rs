//! Hostile input at the platform's decoders of outside data: the Kafka event envelope,
//! tenant manifests (the CLI's and the operator's input), customer identities and page
//! tokens. Property-based fuzzing (the toolchain here has no coverage-guided fuzzer on
//! stable): random bytes, and valid inputs mutated byte by byte, must give a value or a
//! clear error — never a panic. Cases per property: `PROPTEST_CASES` (256 by default in the
//! suite; run longer on demand, e.g. `PROPTEST_CASES=200000 cargo test -p
//! centralita-platform --test hostile_input`). Failures proptest finds are kept in
//! `tests/fixtures/hostile/` (the corpus) and replayed first on every run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use centralita_platform::bus::Event;
use centralita_platform::identity::Identity;
use centralita_platform::tenant::{Tenant, TenantManifest};
use centralita_proto::crm::v1 as crm;
use proptest::prelude::*;

fn acme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples/tenants/acme.yaml"))
        .expect("the example tenant")
}

/// A mutation of `text`: bytes flipped, cut out or inserted at random places.
fn mutated(text: String) -> impl Strategy<Value = Vec<u8>> {
    let len = text.len();
    proptest::collection::vec((0..len.max(1), any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut bytes = text.clone().into_bytes();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match kind {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    })
}

fn parse(bytes: &[u8]) -> Result<Vec<Tenant>, String> {
    let text = String::from_utf8_lossy(bytes);
    TenantManifest::parse_all(&text, chrono::Utc::now()).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failing cases are kept with the corpus, and replayed first on every run.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "tests/fixtures/hostile/hostile_input.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bytes_are_an_envelope_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Event::decode(&bytes);
    }

    #[test]
    fn a_mutated_envelope_is_an_envelope_or_an_error(edits in mutated(String::from_utf8_lossy(&valid_envelope()).into_owned())) {
        if let Ok(e) = Event::decode(&edits) {
            // Whatever decodes is a whole envelope: it encodes and decodes to itself.
            let again = Event::decode(&e.encode()).expect("re-decodes");
            prop_assert_eq!(again.id, e.id);
            prop_assert_eq!(again.tenant, e.tenant);
        }
    }

    #[test]
    fn a_mutated_manifest_is_tenants_or_an_error_naming_a_field(bytes in mutated(acme())) {
        match parse(&bytes) {
            Ok(tenants) => prop_assert!(!tenants.is_empty()),
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    #[test]
    fn any_yaml_text_is_tenants_or_an_error(text in "[ -~\n]{0,400}") {
        let _ = parse(text.as_bytes());
    }

    #[test]
    fn any_identity_is_normal_or_refused(kind in 0i32..8, value in ".{0,80}", network in "[a-z_]{0,12}") {
        let raw = crm::Identity { kind, value, network };
        if let Ok(id) = Identity::parse(&raw, "34") {
            // The normal form is a fixed point.
            prop_assert_eq!(Identity::parse(&id.to_pb(), "34").expect("normal form parses"), id);
        }
    }

    #[test]
    fn any_page_token_is_a_position_or_an_invalid_argument(token in ".{0,300}") {
        let _ = centralita_platform::page::untag("c1", &token);
        let _ = centralita_platform::page::decode(&token, 128);
    }
}

fn valid_envelope() -> Vec<u8> {
    let tenant = centralita_platform::tenant::TenantId::parse("acme").unwrap();
    let payload = centralita_proto::crm::v1::CustomerErased::default();
    Event::new(tenant, &payload).encode()
}

/// The corpus: inputs that once broke a decoder, kept as regression cases.
/// `manifest-yaml-error-loop.yaml`: random text whose YAML syntax error made `parse_all`
/// loop for ever (serde_yaml's document iterator yields the same error again and again).
#[test]
fn every_case_of_the_corpus_is_refused_promptly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hostile");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the corpus") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        if path.to_string_lossy().contains("manifest-") {
            assert!(parse(&bytes).is_err(), "{} was accepted", path.display());
        }
        let _ = Event::decode(&bytes);
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{} took {:?}", path.display(), t.elapsed());
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn the_example_manifest_itself_is_valid() {
    assert_eq!(parse(acme().as_bytes()).unwrap().len(), 1);
}
