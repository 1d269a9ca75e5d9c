//! The CRD the chart installs is the one the code generates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_chart_crd_is_generated_from_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/centralita/crds/tenant.yaml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    let generated = centralita_operator::crd::crd_yaml().unwrap();
    assert!(
        shipped == generated,
        "charts/centralita/crds/tenant.yaml differs from the Rust types; regenerate it with\n  \
         cargo run -q -p centralita-operator -- crd > charts/centralita/crds/tenant.yaml"
    );
}
