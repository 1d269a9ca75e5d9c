//! Random draws of a run: a seeded generator, so a seed reproduces a run's draws.

use std::collections::BTreeMap;

use centralita_proto::tenancy::v1 as tpb;

use crate::scenario::{Distribution, Shape};

/// A small deterministic generator (xorshift64*), so a seed reproduces a run's draws.
#[derive(Debug, Clone)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64) / ((1u64 << 53) as f64)
    }

    pub(super) fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }

    pub(super) fn draw(&mut self, d: &Distribution) -> f64 {
        match d.distribution {
            Shape::Exponential => self.exp(d.mean_seconds),
            Shape::Fixed => d.mean_seconds,
        }
    }

    pub(super) fn pick<'a>(&mut self, shares: &'a BTreeMap<String, f64>) -> &'a str {
        let mut u = self.next_f64();
        for (k, v) in shares {
            if u < *v {
                return k;
            }
            u -= v;
        }
        shares.keys().next_back().map_or("voice", String::as_str)
    }
}

pub(super) fn channel_of(name: &str) -> tpb::Channel {
    match name {
        "chat" => tpb::Channel::Chat,
        "sms" => tpb::Channel::Sms,
        "email" => tpb::Channel::Email,
        "social" => tpb::Channel::Social,
        "task" => tpb::Channel::Task,
        _ => tpb::Channel::Voice,
    }
}
