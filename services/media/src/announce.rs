//! Queue announcements: what a caller waiting in a queue hears between the music — its
//! position and the wait to expect, in the tenant's language (`spec.voice.announcements`).
//!
//! - **Prompts** ([`Prompts`]): recorded phrases, one 8 kHz mono 16-bit PCM WAV per phrase
//!   and language under `CENTRALITA_PROMPTS_DIR` (`{dir}/{language}/{name}.wav`), made by
//!   `deploy/prompts/generate.sh` (espeak-ng) or recorded by the operator under the same
//!   names ([`PROMPT_NAMES`], the numbers `n-1` … `n-99`). Read once at start; a missing or
//!   malformed prompt stops the start with its path, so no caller hears half a sentence.
//! - **Composition** ([`Prompts::compose`]): "You are caller number · three", a pause, "Your
//!   estimated wait time is about · four · minutes.", a pause, "Thank you for waiting…". The
//!   wait is rounded to whole minutes: under half a minute it is "less than a minute", one
//!   minute its own sentence, beyond an hour "more than an hour"; an unknown wait (no agent
//!   or no handle time yet) is left out. A position past 99 is "more than ninety-nine
//!   callers ahead".
//! - **The announcer** ([`run`]): one task per queued call. A few seconds after the answer
//!   and then every `everySeconds` it asks sessions where the contact stands
//!   (`GetQueuePosition`, the channel's token) and plays the announcement once, over the
//!   music, through [`crate::rtp::relay::Announcer`]. A contact no longer waiting (offered,
//!   connected, on hold with an agent) is not announced to; the settings are read from the
//!   tenant at each turn, so a manifest change applies to calls already waiting. An error
//!   from sessions skips that turn (logged), never the call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{AnnouncementsSpec, TenantId, ANNOUNCEMENT_LANGUAGES};

use crate::rtp::g711::Loop;
use crate::rtp::relay::Announcer;
use crate::rtp::CLOCK_RATE;
use crate::sessions::Sessions;

/// The phrases every language needs besides the numbers `n-1` … `n-99`.
pub const PROMPT_NAMES: [&str; 8] =
    ["position", "position-many", "wait", "minutes", "wait-one", "wait-short", "wait-long", "thanks"];
/// The highest number a language has a prompt for (positions; minutes go to 60).
pub const MAX_NUMBER: u32 = 99;
/// The longest wait announced in minutes; beyond, "more than an hour".
const MAX_MINUTES: i64 = 60;
/// The longest prompt read (a phrase, not a song).
const MAX_PROMPT: Duration = Duration::from_secs(20);
/// The pause between two sentences of an announcement.
const PAUSE: Duration = Duration::from_millis(400);
/// The first announcement comes this long after the answer (a little music first).
pub const FIRST_AFTER: Duration = Duration::from_secs(3);

/// What a waiting caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// 1 is next; `None`: not announced.
    pub position: Option<u32>,
    /// The wait to expect in ms; `None`: unknown or not announced.
    pub expected_wait_ms: Option<i64>,
}

/// The prompts of every language, as PCM samples at 8 kHz.
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    languages: BTreeMap<String, BTreeMap<String, Arc<[i16]>>>,
}

impl Prompts {
    /// Reads every prompt of every language of [`ANNOUNCEMENT_LANGUAGES`] under `dir`.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let mut languages = BTreeMap::new();
        for language in ANNOUNCEMENT_LANGUAGES {
            let mut phrases = BTreeMap::new();
            let numbers = (1..=MAX_NUMBER).map(|n| format!("n-{n}"));
            for name in PROMPT_NAMES.iter().map(|n| (*n).to_owned()).chain(numbers) {
                let path: PathBuf = dir.join(language).join(format!("{name}.wav"));
                let samples = read_prompt(&path).map_err(|e| format!("prompt {}: {e}", path.display()))?;
                phrases.insert(name, samples);
            }
            languages.insert(language.to_owned(), phrases);
        }
        Ok(Self { languages })
    }

    /// Prompts from samples already in memory (tests).
    #[cfg(test)]
    pub fn from_phrases(language: &str, phrases: BTreeMap<String, Arc<[i16]>>) -> Self {
        Self { languages: BTreeMap::from([(language.to_owned(), phrases)]) }
    }

    /// The names of the phrases `standing` is told with, in order (`""` is a pause).
    pub fn script(standing: Standing) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        match standing.position {
            Some(0) | None => {}
            Some(p) if p > MAX_NUMBER => out.push("position-many".into()),
            Some(p) => out.extend(["position".to_owned(), format!("n-{p}")]),
        }
        if let Some(ms) = standing.expected_wait_ms.filter(|ms| *ms >= 0) {
            if !out.is_empty() {
                out.push(String::new());
            }
            // Rounded to the nearest minute.
            match (ms + 30_000) / 60_000 {
                0 => out.push("wait-short".into()),
                1 => out.push("wait-one".into()),
                m if m > MAX_MINUTES => out.push("wait-long".into()),
                m => out.extend(["wait".to_owned(), format!("n-{m}"), "minutes".to_owned()]),
            }
        }
        if !out.is_empty() {
            out.extend([String::new(), "thanks".to_owned()]);
        }
        out
    }

    /// The announcement of `standing` in `language`; `None` when there is nothing to say
    /// or no prompts in that language.
    pub fn compose(&self, language: &str, standing: Standing) -> Option<Vec<i16>> {
        let phrases = self.languages.get(language)?;
        let script = Self::script(standing);
        if script.is_empty() {
            return None;
        }
        let pause = (CLOCK_RATE as u128 * PAUSE.as_millis() / 1000) as usize;
        let mut audio = Vec::new();
        for name in script {
            match name.as_str() {
                "" => audio.resize(audio.len() + pause, 0),
                name => audio.extend_from_slice(phrases.get(name)?),
            }
        }
        Some(audio)
    }
}

/// One prompt's samples: a PCM WAV file, 8 kHz, one channel, 16 bits, at most
/// [`MAX_PROMPT`] long.
fn read_prompt(path: &Path) -> Result<Arc<[i16]>, String> {
    let reader = hound::WavReader::open(path).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    if spec.sample_rate != CLOCK_RATE
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(format!(
            "must be 8000 Hz, 1 channel, 16-bit PCM (is {} Hz, {} channels, {} bits {:?})",
            spec.sample_rate, spec.channels, spec.bits_per_sample, spec.sample_format
        ));
    }
    let longest = (CLOCK_RATE as u64 * MAX_PROMPT.as_secs()) as u32;
    if reader.duration() > longest {
        return Err(format!("longer than {} s", MAX_PROMPT.as_secs()));
    }
    if reader.duration() == 0 {
        return Err("has no samples".into());
    }
    reader.into_samples::<i16>().collect::<Result<Vec<_>, _>>().map(Arc::from).map_err(|e| e.to_string())
}

/// What the announcer of one call needs.
pub struct Call {
    pub registry: TenantRegistry,
    pub sessions: Arc<Sessions>,
    pub prompts: Arc<Prompts>,
    pub tenant: TenantId,
    pub contact: String,
    pub announcer: Announcer,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("tenant", &self.tenant).field("contact", &self.contact).finish_non_exhaustive()
    }
}

/// Announces to the caller of `call` while it waits, until the call's media ends (or the
/// task is aborted with the call).
pub async fn run(call: Call) {
    let mut wait = FIRST_AFTER;
    loop {
        tokio::time::sleep(wait).await;
        let settings = call.registry.get(&call.tenant).and_then(|t| t.voice.announcements.clone());
        let Some(settings) = settings else {
            // Announcements switched off meanwhile: look again later.
            wait = Duration::from_secs(30);
            continue;
        };
        wait = Duration::from_secs(u64::from(settings.every_seconds));
        let Some(audio) = announcement(&call, &settings).await else { continue };
        if !call.announcer.announce(Arc::new(Loop::from_samples(&audio))).await {
            return;
        }
    }
}

/// The announcement for the contact now, if it is waiting.
async fn announcement(call: &Call, settings: &AnnouncementsSpec) -> Option<Vec<i16>> {
    let standing = match call.sessions.queue_position(&call.tenant, &call.contact).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "no queue position: announcement skipped");
            return None;
        }
    };
    if standing.position == 0 {
        return None;
    }
    let told = Standing {
        position: settings.position.then_some(standing.position),
        expected_wait_ms: Some(standing.expected_wait_ms).filter(|ms| settings.expected_wait && *ms >= 0),
    };
    tracing::debug!(position = standing.position, expected_wait_ms = standing.expected_wait_ms, "announcing");
    call.prompts.compose(&settings.language, told)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(position: Option<u32>, wait: Option<i64>) -> Vec<String> {
        Prompts::script(Standing { position, expected_wait_ms: wait })
    }

    #[test]
    fn the_script_says_position_then_wait_in_whole_minutes() {
        assert_eq!(script(Some(3), Some(245_000)), ["position", "n-3", "", "wait", "n-4", "minutes", "", "thanks"]);
        assert_eq!(script(Some(1), None), ["position", "n-1", "", "thanks"]);
        assert_eq!(script(None, Some(20_000)), ["wait-short", "", "thanks"]);
        assert_eq!(script(Some(2), Some(29_999)), ["position", "n-2", "", "wait-short", "", "thanks"]);
        assert_eq!(script(Some(2), Some(30_000)), ["position", "n-2", "", "wait-one", "", "thanks"]);
        assert_eq!(script(Some(2), Some(89_999))[3], "wait-one");
        assert_eq!(script(Some(2), Some(90_000))[3..6], ["wait", "n-2", "minutes"]);
        assert_eq!(script(Some(2), Some(60 * 60_000))[3..6], ["wait", "n-60", "minutes"]);
        assert_eq!(script(Some(2), Some(61 * 60_000))[3], "wait-long");
        assert_eq!(script(Some(100), None), ["position-many", "", "thanks"]);
        assert_eq!(script(Some(99), None)[..2], ["position", "n-99"]);
        assert!(script(Some(0), None).is_empty(), "not waiting: nothing");
        assert!(script(None, Some(-1)).is_empty(), "an unknown wait is not told");
    }

    #[test]
    fn an_announcement_is_its_phrases_with_pauses() {
        let phrase = |v: i16, n: usize| -> Arc<[i16]> { Arc::from(vec![v; n]) };
        let phrases: BTreeMap<String, Arc<[i16]>> =
            [("position", phrase(1, 100)), ("n-2", phrase(2, 50)), ("thanks", phrase(3, 70))]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        let prompts = Prompts::from_phrases("es", phrases);
        let audio = prompts.compose("es", Standing { position: Some(2), expected_wait_ms: None }).expect("composed");
        let pause = 3200;
        assert_eq!(audio.len(), 100 + 50 + pause + 70);
        assert_eq!((audio[0], audio[100], audio[150], audio[150 + pause]), (1, 2, 0, 3));
        assert_eq!(prompts.compose("en", Standing { position: Some(2), expected_wait_ms: None }), None);
        // A phrase the script needs and the language lacks: nothing rather than half.
        assert_eq!(prompts.compose("es", Standing { position: Some(3), expected_wait_ms: None }), None);
    }

    #[test]
    fn prompts_load_only_in_the_expected_format() {
        let root = std::env::temp_dir().join(format!("centralita-prompts-{}", uuid::Uuid::now_v7().simple()));
        let dir = Dir(root);
        let write = |path: &Path, rate: u32, channels: u16, samples: usize| {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            let spec = hound::WavSpec {
                channels,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(path, spec).expect("create");
            for i in 0..samples {
                w.write_sample((i % 100) as i16).expect("sample");
            }
            w.finalize().expect("finalize");
        };
        let names: Vec<String> =
            PROMPT_NAMES.iter().map(|n| (*n).to_owned()).chain((1..=MAX_NUMBER).map(|n| format!("n-{n}"))).collect();
        for language in ANNOUNCEMENT_LANGUAGES {
            for name in &names {
                write(&dir.path().join(language).join(format!("{name}.wav")), 8000, 1, 400);
            }
        }
        let prompts = Prompts::load(dir.path()).expect("loads");
        let audio = prompts.compose("en", Standing { position: Some(7), expected_wait_ms: Some(120_000) }).expect("en");
        assert_eq!(audio.len(), 400 * 6 + 3200 * 2, "position, 7, wait, 2, minutes, thanks and two pauses");

        let bad = dir.path().join("es/n-7.wav");
        write(&bad, 16_000, 1, 400);
        let e = Prompts::load(dir.path()).unwrap_err();
        assert!(e.contains("es/n-7.wav") && e.contains("must be 8000 Hz, 1 channel, 16-bit PCM"), "{e}");
        write(&bad, 8000, 2, 400);
        assert!(Prompts::load(dir.path()).unwrap_err().contains("1 channel"));
        std::fs::write(&bad, b"RIFF garbage").expect("write");
        assert!(Prompts::load(dir.path()).unwrap_err().contains("es/n-7.wav"));
        std::fs::remove_file(&bad).expect("rm");
        assert!(Prompts::load(dir.path()).unwrap_err().contains("es/n-7.wav"), "a missing prompt is named");
        write(&bad, 8000, 1, 8000 * 21);
        assert!(Prompts::load(dir.path()).unwrap_err().contains("longer than 20 s"));
    }

    /// A directory removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
