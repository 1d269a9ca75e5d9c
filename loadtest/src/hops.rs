//! Where the time of a step goes, hop by hop: every service records how old each event is
//! when its consumer starts handling it (`centralita_bus_event_age_seconds`, by topic: the
//! publisher's outbox, the broker and the fetch wait together). Scraping the services'
//! `/metrics` before and after a step and taking the difference gives that step's
//! distribution of each hop.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const METRIC: &str = "centralita_bus_event_age_seconds_bucket{";

/// Cumulative bucket counts per (service, topic): `(upper bound in seconds, count)`,
/// ascending, `+Inf` last.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ages(BTreeMap<(String, String), Vec<(f64, u64)>>);

/// One hop of one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hop {
    pub service: String,
    pub topic: String,
    pub events: u64,
    /// `None` when the quantile lies beyond the last finite bucket.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Reads the event-age histograms out of a Prometheus text exposition.
pub fn parse(text: &str) -> Ages {
    let mut out: BTreeMap<(String, String), Vec<(f64, u64)>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let label =
            |name: &str| labels.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'));
        let (Some(service), Some(topic), Some(le)) = (label("service"), label("topic"), label("le")) else {
            continue;
        };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
        let Ok(count) = value.trim().parse::<f64>() else { continue };
        if le.is_nan() {
            continue;
        }
        out.entry((service.to_owned(), topic.to_owned())).or_default().push((le, count as u64));
    }
    for buckets in out.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ages(out)
}

/// The `q` quantile in milliseconds of cumulative `buckets`, interpolated linearly within
/// its bucket; `None` without events or beyond the last finite bound.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = (0.0, 0u64);
    for &(le, cum) in buckets {
        if cum as f64 >= rank {
            if le.is_infinite() {
                return None;
            }
            let within = (cum - below.1) as f64;
            let fraction = if within > 0.0 { (rank - below.1 as f64) / within } else { 1.0 };
            return Some(1000.0 * (below.0 + fraction * (le - below.0)));
        }
        below = (le, cum);
    }
    None
}

/// The hops seen between two scrapes (`after` minus `before`), topics shown without
/// `prefix`.
pub fn between(before: &Ages, after: &Ages, prefix: &str) -> Vec<Hop> {
    after
        .0
        .iter()
        .filter_map(|((service, topic), buckets)| {
            let earlier = before.0.get(&(service.clone(), topic.clone()));
            let delta: Vec<(f64, u64)> = buckets
                .iter()
                .map(|&(le, cum)| {
                    let was = earlier.and_then(|b| b.iter().find(|(l, _)| *l == le)).map_or(0, |(_, c)| *c);
                    (le, cum.saturating_sub(was))
                })
                .collect();
            let events = delta.last()?.1;
            (events > 0).then(|| Hop {
                service: service.clone(),
                topic: topic.strip_prefix(prefix).unwrap_or(topic).to_owned(),
                events,
                p50_ms: quantile(&delta, 0.5),
                p99_ms: quantile(&delta, 0.99),
            })
        })
        .collect()
}

/// Scrapes every `http://host:port/path` URL and merges what they expose.
pub async fn scrape(urls: &[String]) -> anyhow::Result<Ages> {
    let mut all = Ages::default();
    for url in urls {
        let text = get(url).await.with_context(|| format!("scraping {url}"))?;
        all.0.extend(parse(&text).0);
    }
    Ok(all)
}

/// A plain HTTP/1.0 GET (the services' admin port is on loopback).
async fn get(url: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("http://") else { bail!("only http:// URLs, not `{url}`") };
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(host))
        .await
        .context("connect timed out")??;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    let mut body = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut body))
        .await
        .context("read timed out")??;
    let text = String::from_utf8_lossy(&body).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("not an HTTP response") };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(counts: [u64; 4]) -> String {
        let les = ["0.002", "0.01", "0.1", "+Inf"];
        les.iter()
            .zip(counts)
            .map(|(le, c)| {
                format!("centralita_bus_event_age_seconds_bucket{{service=\"routing\",le=\"{le}\",topic=\"p.routing.inputs\"}} {c}\n")
            })
            .collect::<String>()
            + "centralita_bus_event_age_seconds_count{service=\"routing\",topic=\"p.routing.inputs\"} 9\n"
            + "centralita_service_ready{service=\"routing\"} 1\n"
    }

    #[test]
    fn a_step_is_the_difference_of_two_scrapes() {
        let before = parse(&exposition([10, 10, 10, 10]));
        // 100 more events: 50 within 2 ms, 40 within 10 ms, 9 within 100 ms, 1 beyond.
        let after = parse(&exposition([60, 100, 109, 110]));
        let hops = between(&before, &after, "p.");
        assert_eq!(hops.len(), 1);
        let h = &hops[0];
        assert_eq!((h.service.as_str(), h.topic.as_str(), h.events), ("routing", "routing.inputs", 100));
        // The 50th event is the last of the first bucket; the 99th is in the 10–100 ms one.
        assert!((h.p50_ms.unwrap() - 2.0).abs() < 1e-9, "{h:?}");
        assert!((h.p99_ms.unwrap() - 100.0).abs() < 1e-9, "{h:?}");
        // Nothing happened: no hop.
        assert!(between(&after, &after, "p.").is_empty());
    }

    #[test]
    fn quantiles_beyond_the_last_bound_are_unknown() {
        assert_eq!(quantile(&[(0.01, 0), (f64::INFINITY, 4)], 0.5), None);
        assert_eq!(quantile(&[(0.01, 0), (f64::INFINITY, 0)], 0.5), None);
        let q = quantile(&[(0.01, 4), (f64::INFINITY, 4)], 0.5).unwrap();
        assert!((q - 5.0).abs() < 1e-9, "{q}");
    }
}
