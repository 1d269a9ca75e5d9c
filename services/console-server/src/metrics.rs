//! The console server's own metrics, registered beside the platform's (served on the admin
//! port). Label values are a fixed set; never a tenant or a user.

use centralita_platform::metrics::Metrics as Platform;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// What became of a development sign-in request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// A token was minted.
    Minted,
    /// The request was invalid (400).
    Refused,
    /// Development sign-in is off (404).
    Disabled,
}

impl SignIn {
    const ALL: [SignIn; 3] = [SignIn::Minted, SignIn::Refused, SignIn::Disabled];

    fn as_str(self) -> &'static str {
        match self {
            SignIn::Minted => "minted",
            SignIn::Refused => "refused",
            SignIn::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Default)]
pub struct Metrics {
    dev_sign_ins: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    /// Declares the metrics in the platform's registry, every outcome at 0.
    pub fn register(platform: &Platform) -> Self {
        let m = Metrics::default();
        platform.registry.lock().unwrap_or_else(|p| p.into_inner()).register(
            "centralita_console_dev_sign_ins",
            "Development sign-in requests, by outcome (minted, refused, disabled)",
            m.dev_sign_ins.clone(),
        );
        for outcome in SignIn::ALL {
            let _ = m.dev_sign_ins.get_or_create(&OutcomeLabel { outcome: outcome.as_str() });
        }
        m
    }

    pub fn dev_sign_in(&self, outcome: SignIn) {
        self.dev_sign_ins.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
    }
}
