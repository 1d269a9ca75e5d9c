//! Messenger and Instagram (`spec.messenger`, `spec.instagram`): the tenant's Facebook Pages
//! or Instagram professional accounts on Meta's Messenger Platform (Meta's id of each, and
//! the queue its customers' messages join), and the name of the Kubernetes Secret holding
//! the app secret (webhook signatures), the Page access token (sends) and the webhook's
//! verify token. No secret is ever in the manifest. Both networks' conversations are
//! contacts of channel `social`.

use std::collections::BTreeMap;

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use super::voice::is_secret_name;
use crate::error::FieldViolation;

/// At most this many Pages (or accounts) a tenant, per network.
pub const MAX_PAGES: usize = 50;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PagesSpec {
    /// The Kubernetes Secret (in the installation's namespace) with the keys `appSecret`,
    /// `pageAccessToken` and `verifyToken`.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub secret_name: String,
    /// The tenant's Facebook Pages (Messenger) or Instagram professional accounts
    /// (Instagram), each leading to one of its queues.
    #[serde(default)]
    pub pages: Vec<PageSpec>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PageSpec {
    /// Meta's id of the Page or account (digits).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]{1,32}$")))]
    pub id: String,
    /// The queue (of `spec.routing.queues`) its messages join.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub queue: String,
}

/// A tenant's Pages (or Instagram accounts), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pages {
    pub secret_name: String,
    /// Meta's id → the queue.
    pub pages: BTreeMap<String, String>,
}

impl Pages {
    /// The queue of the Page (or account) with Meta's id `id`, if it is the tenant's.
    pub fn queue(&self, id: &str) -> Option<&str> {
        self.pages.get(id).map(String::as_str)
    }
}

fn is_page_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl PagesSpec {
    /// The channel, or violations under `root` (`spec.messenger`, `spec.instagram`).
    /// `queues` says whether a queue is the tenant's; `social` whether the social channel is
    /// enabled.
    pub fn validate(
        &self,
        root: &str,
        queues: impl Fn(&str) -> bool,
        social: bool,
        v: &mut Vec<FieldViolation>,
    ) -> Option<Pages> {
        let before = v.len();
        let mut bad = |field: String, msg: String| v.push(FieldViolation::new(field, msg));
        if !social {
            bad(root.to_owned(), "needs the social channel in spec.channels".into());
        }
        if !is_secret_name(&self.secret_name) {
            bad(format!("{root}.secretName"), "must be a Kubernetes Secret name (a-z, 0-9, - and ., 1 to 253)".into());
        }
        if self.pages.is_empty() || self.pages.len() > MAX_PAGES {
            bad(format!("{root}.pages"), format!("must name 1 to {MAX_PAGES} pages"));
        }
        let mut pages = BTreeMap::new();
        for (i, p) in self.pages.iter().enumerate() {
            if !is_page_id(&p.id) {
                bad(format!("{root}.pages[{i}].id"), "must be Meta's id (1 to 32 digits)".into());
            } else if pages.contains_key(&p.id) {
                bad(format!("{root}.pages[{i}].id"), format!("`{}` is listed twice", p.id));
            }
            if !queues(&p.queue) {
                bad(format!("{root}.pages[{i}].queue"), format!("`{}` is not a queue of spec.routing.queues", p.queue));
            }
            pages.entry(p.id.clone()).or_insert_with(|| p.queue.clone());
        }
        (v.len() == before).then(|| Pages { secret_name: self.secret_name.clone(), pages })
    }
}

impl From<&Pages> for PagesSpec {
    fn from(p: &Pages) -> Self {
        PagesSpec {
            secret_name: p.secret_name.clone(),
            pages: p.pages.iter().map(|(id, queue)| PageSpec { id: id.clone(), queue: queue.clone() }).collect(),
        }
    }
}

impl From<&Pages> for pb::PagesConfig {
    fn from(p: &Pages) -> Self {
        pb::PagesConfig {
            secret_name: p.secret_name.clone(),
            pages: p.pages.iter().map(|(id, queue)| pb::PageConfig { id: id.clone(), queue: queue.clone() }).collect(),
        }
    }
}

impl From<pb::PagesConfig> for PagesSpec {
    fn from(p: pb::PagesConfig) -> Self {
        PagesSpec {
            secret_name: p.secret_name,
            pages: p.pages.into_iter().map(|x| PageSpec { id: x.id, queue: x.queue }).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PagesSpec {
        PagesSpec {
            secret_name: "acme-meta".into(),
            pages: vec![PageSpec { id: "104293851".into(), queue: "support".into() }],
        }
    }

    #[test]
    fn pages_validate_and_round_trip() {
        let mut v = Vec::new();
        let p = spec().validate("spec.messenger", |q| q == "support", true, &mut v).expect("valid");
        assert!(v.is_empty());
        assert_eq!(p.queue("104293851"), Some("support"));
        assert_eq!(p.queue("1"), None);
        assert_eq!(PagesSpec::from(&p), spec());
        assert_eq!(PagesSpec::from(pb::PagesConfig::from(&p)), spec());
    }

    #[test]
    fn refusals_name_their_field() {
        let fields = |s: &PagesSpec, social: bool| {
            let mut v = Vec::new();
            s.validate("spec.instagram", |q| q == "support", social, &mut v);
            v.into_iter().map(|f| f.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(&spec(), false), ["spec.instagram"]);
        let bad = PagesSpec {
            secret_name: "Bad_Name".into(),
            pages: vec![
                PageSpec { id: "12a".into(), queue: "support".into() },
                PageSpec { id: "7".into(), queue: "nope".into() },
                PageSpec { id: "7".into(), queue: "support".into() },
            ],
        };
        assert_eq!(
            fields(&bad, true),
            [
                "spec.instagram.secretName",
                "spec.instagram.pages[0].id",
                "spec.instagram.pages[1].queue",
                "spec.instagram.pages[2].id"
            ]
        );
        assert_eq!(fields(&PagesSpec { pages: vec![], ..spec() }, true), ["spec.instagram.pages"]);
    }
}
