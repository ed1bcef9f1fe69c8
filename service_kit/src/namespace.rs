//! A namespace isolates one deployment's queues and Redis keys from another's on a
//! shared broker and Redis: production runs with the empty namespace, every test
//! with a random one, so tests run in parallel and clean up after themselves.

/// A prefix for queue names and Redis keys. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self(prefix.into())
    }

    /// A fresh namespace, for tests: unique within the process by a counter (two
    /// tests starting in the same clock tick must not share one), across processes
    /// by the pid, across runs by the time.
    pub fn random(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self(format!("t-{label}-{nanos:x}-{:x}-{n}", std::process::id()))
    }

    pub fn prefix(&self) -> &str {
        &self.0
    }

    /// The queue name of `base` (e.g. `restaurant_service.commands`).
    pub fn queue(&self, base: &str) -> String {
        if self.0.is_empty() { base.to_owned() } else { format!("{}.{base}", self.0) }
    }

    /// The Redis key prefix of a service, ending in `:`; e.g. `restaurant:`.
    pub fn key_prefix(&self, service: &str) -> String {
        if self.0.is_empty() { format!("{service}:") } else { format!("{}:{service}:", self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::Namespace;

    #[test]
    fn random_namespaces_differ_even_within_one_clock_tick() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|_| Namespace::random("x").prefix().to_owned()).collect();
        assert_eq!(names.len(), 1000);
    }
}
