//! Recording's domain metrics (`centralita_recording_*`), registered beside the platform's.
//! Label values are fixed sets (states, actions, outcomes), never tenant or recording ids.

use centralita_platform::metrics::Metrics as Platform;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub started: Counter,
    finished: Family<StateLabel, Counter>,
    pub pcm_bytes: Counter,
    pub stored_bytes: Counter,
    pub late_samples: Counter,
    pub refused_inputs: Counter,
    actions: Family<ActionLabel, Counter>,
    pub retention_deleted: Counter,
    pub retention_failures: Counter,
}

impl Metrics {
    pub fn register(platform: &Platform) -> Self {
        let m = Metrics::default();
        let mut r = platform.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "centralita_recording_started",
            "Recordings started (IngestCall headers accepted)",
            m.started.clone(),
        );
        r.register(
            "centralita_recording_finished",
            "Recordings finished, by state (complete, interrupted)",
            m.finished.clone(),
        );
        r.register(
            "centralita_recording_audio_bytes",
            "Stereo PCM bytes captured (before encryption)",
            m.pcm_bytes.clone(),
        );
        r.register(
            "centralita_recording_stored_bytes",
            "Encrypted bytes written to the object store",
            m.stored_bytes.clone(),
        );
        r.register(
            "centralita_recording_late_samples",
            "Audio samples dropped because they arrived after their frames were written (over 1 s late)",
            m.late_samples.clone(),
        );
        r.register(
            "centralita_recording_refused_inputs",
            "IngestCall messages refused as invalid (the recording is kept as interrupted)",
            m.refused_inputs.clone(),
        );
        r.register(
            "centralita_recording_audited_actions",
            "Audited actions, by action (playback, url_issued, download, hold_set, hold_cleared, retention_delete)",
            m.actions.clone(),
        );
        r.register(
            "centralita_recording_retention_deleted",
            "Recordings deleted by the retention sweeper (object and data key)",
            m.retention_deleted.clone(),
        );
        r.register(
            "centralita_recording_retention_failures",
            "Retention sweeps or deletions that failed and will be retried",
            m.retention_failures.clone(),
        );
        drop(r);
        m
    }

    pub fn finished(&self, state: &'static str, stored: u64) {
        self.finished.get_or_create(&StateLabel { state }).inc();
        self.stored_bytes.inc_by(stored);
    }

    pub fn audited(&self, action: &'static str) {
        self.actions.get_or_create(&ActionLabel { action }).inc();
    }
}
