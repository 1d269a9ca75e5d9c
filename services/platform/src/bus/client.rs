//! The librdkafka settings every client of the bus starts from.

use rdkafka::ClientConfig;

/// Sets `group.instance.id` when there is one.
pub trait StaticMember {
    fn set_static_member(&mut self, id: Option<&str>) -> &mut Self;
}

impl StaticMember for ClientConfig {
    fn set_static_member(&mut self, id: Option<&str>) -> &mut Self {
        if let Some(id) = id {
            self.set("group.instance.id", id);
        }
        self
    }
}

/// librdkafka settings shared by every client.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        // A consumer subscribed to a topic another process is still creating learns of it
        // at the next metadata refresh (librdkafka's default is every 5 minutes).
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("log_level", "4");
    c
}
