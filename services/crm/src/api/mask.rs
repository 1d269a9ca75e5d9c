//! The update mask of `UpdateCustomer` (AIP-134): which fields of `customer` a call changes.
//!
//! The mask comes as `update_field_mask`, a `google.protobuf.FieldMask`, or from clients
//! older than that field as the deprecated list `update_mask` (the same paths). The
//! FieldMask is read when it names a path; the list only otherwise, and a request naming
//! paths in both must name the same ones, so neither is silently ignored. A refusal names
//! the request field the paths came from.

use centralita_platform::error::FieldViolation;
use centralita_proto::crm::v1 as pb;

/// A field of `Customer` that an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Field {
    DisplayName,
    PreferredLanguage,
    ValueTier,
    Attributes,
    Tags,
}

impl Field {
    const ALL: [Field; 5] =
        [Field::DisplayName, Field::PreferredLanguage, Field::ValueTier, Field::Attributes, Field::Tags];

    fn path(self) -> &'static str {
        match self {
            Field::DisplayName => "display_name",
            Field::PreferredLanguage => "preferred_language",
            Field::ValueTier => "value_tier",
            Field::Attributes => "attributes",
            Field::Tags => "tags",
        }
    }

    fn parse(path: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.path() == path)
    }
}

/// What a request's mask asks to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mask {
    /// The fields to change, each once, in declaration order.
    pub fields: Vec<Field>,
    /// The request field the paths came from (the one a refusal names).
    pub from: &'static str,
    /// No path was named: the call changes no field of `customer` (identities only).
    pub empty: bool,
}

const FIELD_MASK: &str = "update_field_mask";
const DEPRECATED_LIST: &str = "update_mask";

/// The mask of `req`; every path that is not a field an update may change (or `*` alone)
/// is a violation pushed on `v`.
// Reads the deprecated `update_mask` of older clients.
#[allow(deprecated)]
pub(super) fn of(req: &pb::UpdateCustomerRequest, v: &mut Vec<FieldViolation>) -> Mask {
    let mask = req.update_field_mask.as_ref().map_or(&[][..], |m| m.paths.as_slice());
    let list = req.update_mask.as_slice();
    if !mask.is_empty() && !list.is_empty() && sorted(mask) != sorted(list) {
        v.push(FieldViolation::new(
            FIELD_MASK,
            format!("names other paths than the deprecated `{DEPRECATED_LIST}`; set only `{FIELD_MASK}`"),
        ));
    }
    let (paths, from) = if mask.is_empty() { (list, DEPRECATED_LIST) } else { (mask, FIELD_MASK) };
    let mut fields = Vec::new();
    if paths.iter().any(|p| p == "*") {
        if paths.iter().any(|p| p != "*") {
            v.push(FieldViolation::new(from, "`*` must be the only path"));
        }
        fields.extend(Field::ALL);
    }
    for p in paths.iter().filter(|p| *p != "*") {
        match Field::parse(p) {
            Some(f) => fields.push(f),
            None => v.push(FieldViolation::new(
                from,
                format!(
                    "`{p}` cannot be updated (display_name, preferred_language, value_tier, attributes, tags, or `*` \
                     alone)"
                ),
            )),
        }
    }
    fields.sort();
    fields.dedup();
    Mask { fields, from, empty: paths.is_empty() }
}

fn sorted(paths: &[String]) -> Vec<&str> {
    let mut p: Vec<&str> = paths.iter().map(String::as_str).collect();
    p.sort_unstable();
    p.dedup();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    fn with_mask(p: &[&str]) -> pb::UpdateCustomerRequest {
        pb::UpdateCustomerRequest {
            update_field_mask: Some(prost_types::FieldMask { paths: paths(p) }),
            ..Default::default()
        }
    }

    fn read(req: &pb::UpdateCustomerRequest) -> (Mask, Vec<FieldViolation>) {
        let mut v = Vec::new();
        (of(req, &mut v), v)
    }

    #[test]
    fn the_field_mask_names_the_fields_that_change() {
        let (m, v) = read(&with_mask(&["tags", "display_name", "tags"]));
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(m, Mask { fields: vec![Field::DisplayName, Field::Tags], from: FIELD_MASK, empty: false });
        let (m, v) = read(&with_mask(&["*"]));
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(m.fields, Field::ALL);
    }

    #[test]
    #[allow(deprecated)]
    fn the_deprecated_list_of_an_older_client_still_reads() {
        let old = pb::UpdateCustomerRequest { update_mask: paths(&["value_tier"]), ..Default::default() };
        let (m, v) = read(&old);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(m, Mask { fields: vec![Field::ValueTier], from: DEPRECATED_LIST, empty: false });
        // An empty FieldMask is no mask: the list is read.
        let (m, _) = read(&pb::UpdateCustomerRequest { update_mask: paths(&["tags"]), ..with_mask(&[]) });
        assert_eq!((m.fields, m.from), (vec![Field::Tags], DEPRECATED_LIST));
        // Both naming the same paths is fine; other paths are refused, naming the FieldMask.
        let both = pb::UpdateCustomerRequest {
            update_mask: paths(&["tags", "attributes"]),
            ..with_mask(&["attributes", "tags"])
        };
        assert_eq!(read(&both).1, []);
        let both = pb::UpdateCustomerRequest { update_mask: paths(&["tags"]), ..with_mask(&["display_name"]) };
        let (m, v) = read(&both);
        assert_eq!((m.fields, v.len(), v[0].field.as_str()), (vec![Field::DisplayName], 1, FIELD_MASK));
    }

    #[test]
    fn an_empty_or_absent_mask_changes_no_field() {
        for req in [pb::UpdateCustomerRequest::default(), with_mask(&[])] {
            let (m, v) = read(&req);
            assert!(v.is_empty(), "{v:?}");
            assert_eq!(m, Mask { fields: vec![], from: DEPRECATED_LIST, empty: true });
        }
    }

    #[test]
    fn unknown_paths_are_refused_naming_the_mask() {
        let (m, v) = read(&with_mask(&["display_name", "identities", "name", "customer.tags"]));
        assert_eq!(m.fields, [Field::DisplayName]);
        assert!(!m.empty);
        let refused: Vec<_> = v.iter().map(|v| (v.field.as_str(), v.description.split('`').nth(1))).collect();
        assert_eq!(
            refused,
            [(FIELD_MASK, Some("identities")), (FIELD_MASK, Some("name")), (FIELD_MASK, Some("customer.tags"))]
        );
        let (_, v) = read(&with_mask(&["*", "tags"]));
        assert_eq!(
            (v.len(), v[0].field.as_str(), v[0].description.as_str()),
            (1, FIELD_MASK, "`*` must be the only path")
        );
    }
}
