//! The set of upstreams: the file berth writes into the container
//! (`upstreams.json`, [`UpstreamFile`]) and the [`Table`] the listeners pick
//! from.
//!
//! An upstream is known by its address (IP, and a port when the file gives
//! one; otherwise each listener's upstream port). Applying a new file keeps
//! the upstreams that stay (with their in-flight counts), adds the new ones
//! and moves the removed ones to a draining list: they get no new request,
//! and the requests they are serving finish. [`Table::drained`] says when
//! none is left in flight, which is when berth may stop them.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The file berth writes: which upstreams to balance over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UpstreamFile {
    /// An opaque version berth chose (a hash of the rest); reported back by
    /// the admin endpoint `/applied?version=...` once in effect.
    #[serde(default)]
    pub version: String,
    /// Who wrote it (the resource address), for people reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The upstreams, in order.
    #[serde(default)]
    pub upstreams: Vec<Entry>,
}

/// One upstream of [`UpstreamFile`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Entry {
    /// A name for logs and the status page (berth: the container name).
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
    /// Its port; without one, each listener's upstream port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl UpstreamFile {
    /// Parses the file's bytes. A file caught half-written does not parse,
    /// and the table keeps the previous set until it does.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// One upstream and what the proxy knows of it.
#[derive(Debug)]
pub struct Upstream {
    ip: IpAddr,
    port: Option<u16>,
    name: Mutex<String>,
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch until which the upstream is
    /// avoided after a failed connection (0: never failed).
    down_until: AtomicU64,
    /// Connections to it that failed.
    failures: AtomicU64,
}

impl Upstream {
    fn new(entry: &Entry) -> Self {
        Self {
            ip: entry.ip,
            port: entry.port,
            name: Mutex::new(entry.name.clone()),
            in_flight: AtomicUsize::new(0),
            down_until: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn is(&self, entry: &Entry) -> bool {
        self.ip == entry.ip && self.port == entry.port
    }

    /// Its socket address for a listener whose upstream port is `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(port))
    }

    /// Its name in the latest file that listed it.
    pub fn name(&self) -> String {
        self.name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests it is serving now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// A request on its way to an upstream: counted in its in-flight requests
/// until dropped (the proxy keeps it until the response body is sent).
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl InFlight {
    fn new(upstream: Arc<Upstream>) -> Self {
        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(upstream)
    }

    /// The upstream it goes to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What applying a file changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Names of the upstreams added.
    pub added: Vec<String>,
    /// Names of the upstreams removed (now draining).
    pub removed: Vec<String>,
}

impl Change {
    /// Whether the set of upstreams changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Default)]
struct Active {
    version: String,
    upstreams: Vec<Arc<Upstream>>,
}

/// The upstreams requests are balanced over (round robin, skipping the ones
/// that failed to connect lately), and the removed ones still draining.
#[derive(Debug)]
pub struct Table {
    epoch: Instant,
    active: RwLock<Active>,
    draining: Mutex<Vec<Arc<Upstream>>>,
    next: AtomicUsize,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table (every request answers 503 until a file is applied).
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            active: RwLock::new(Active::default()),
            draining: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// Makes `file`'s upstreams the active set. Never touches a client
    /// connection: requests already on their way finish where they are.
    pub fn apply(&self, file: &UpstreamFile) -> Change {
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        let mut change = Change::default();
        let mut next: Vec<Arc<Upstream>> = Vec::with_capacity(file.upstreams.len());
        for entry in &file.upstreams {
            if next.iter().any(|u| u.is(entry)) {
                continue;
            }
            let upstream = if let Some(kept) = active.upstreams.iter().find(|u| u.is(entry)) {
                Arc::clone(kept)
            } else if let Some(at) = draining.iter().position(|u| u.is(entry)) {
                change.added.push(entry.name.clone());
                draining.swap_remove(at)
            } else {
                change.added.push(entry.name.clone());
                Arc::new(Upstream::new(entry))
            };
            *upstream.name.lock().unwrap_or_else(PoisonError::into_inner) = entry.name.clone();
            next.push(upstream);
        }
        for old in &active.upstreams {
            if !next.iter().any(|u| Arc::ptr_eq(u, old)) {
                change.removed.push(old.name());
                draining.push(Arc::clone(old));
            }
        }
        draining.retain(|u| u.in_flight() > 0);
        active.upstreams = next;
        // A new set starts its rotation at its first upstream.
        self.next.store(0, Ordering::Relaxed);
        active.version = file.version.clone();
        change
    }

    /// The version of the file in effect.
    pub fn version(&self) -> String {
        self.read().version.clone()
    }

    /// How many upstreams are active.
    pub fn len(&self) -> usize {
        self.read().upstreams.len()
    }

    /// Whether no upstream is active.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Active> {
        self.active.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next upstream for a request, round robin, other than those in
    /// `tried`; one that failed to connect lately only when no other is
    /// left. The request counts as in flight from here on, so an upstream
    /// removed after this call is not reported drained before it ends.
    pub fn pick(&self, tried: &[Arc<Upstream>]) -> Option<InFlight> {
        let active = self.read();
        let n = active.upstreams.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut fallback = None;
        for i in 0..n {
            let upstream = &active.upstreams[(start.wrapping_add(i)) % n];
            if tried.iter().any(|t| Arc::ptr_eq(t, upstream)) {
                continue;
            }
            if upstream.down_until.load(Ordering::Relaxed) > now {
                fallback.get_or_insert(upstream);
                continue;
            }
            return Some(InFlight::new(Arc::clone(upstream)));
        }
        fallback.map(|u| InFlight::new(Arc::clone(u)))
    }

    /// Avoids `upstream` for `period` (its connection failed).
    pub fn mark_down(&self, upstream: &Upstream, period: Duration) {
        upstream.failures.fetch_add(1, Ordering::Relaxed);
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        upstream.down_until.store(until, Ordering::Relaxed);
    }

    /// Requests still in flight to removed upstreams.
    pub fn draining_in_flight(&self) -> usize {
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        draining.retain(|u| u.in_flight() > 0);
        draining.iter().map(|u| u.in_flight()).sum()
    }

    /// Whether no removed upstream has a request in flight.
    pub fn drained(&self) -> bool {
        self.draining_in_flight() == 0
    }

    /// A JSON summary for the admin endpoint's `/status`.
    pub fn status(&self) -> serde_json::Value {
        let describe = |u: &Arc<Upstream>| {
            serde_json::json!({
                "name": u.name(),
                "ip": u.ip.to_string(),
                "port": u.port,
                "in_flight": u.in_flight(),
                "failures": u.failures.load(Ordering::Relaxed),
            })
        };
        let (version, active): (String, Vec<serde_json::Value>) = {
            let active = self.read();
            (
                active.version.clone(),
                active.upstreams.iter().map(describe).collect(),
            )
        };
        self.draining_in_flight();
        let draining: Vec<serde_json::Value> = self
            .draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(describe)
            .collect();
        serde_json::json!({ "version": version, "upstreams": active, "draining": draining })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: &str, entries: &[(&str, &str)]) -> UpstreamFile {
        UpstreamFile {
            version: version.into(),
            owner: None,
            upstreams: entries
                .iter()
                .map(|(name, ip)| Entry {
                    name: (*name).into(),
                    ip: ip.parse().unwrap(),
                    port: None,
                })
                .collect(),
        }
    }

    fn names(table: &Table, picks: usize) -> Vec<String> {
        (0..picks)
            .map(|_| table.pick(&[]).unwrap().upstream().name())
            .collect()
    }

    #[test]
    fn parses_what_berth_writes_and_refuses_half_a_file() {
        let text = br#"{"version":"v1","owner":"docker_container.web","upstreams":[{"name":"web-1","ip":"172.18.0.3"},{"name":"web-2","ip":"::1","port":8080}]}"#;
        let parsed = UpstreamFile::parse(text).unwrap();
        assert_eq!(parsed.version, "v1");
        assert_eq!(parsed.upstreams.len(), 2);
        assert_eq!(parsed.upstreams[1].port, Some(8080));
        assert!(UpstreamFile::parse(&text[..text.len() - 3]).is_err());
        assert!(UpstreamFile::parse(b"").is_err());
    }

    #[test]
    fn round_robin_over_the_active_set() {
        let table = Table::new();
        assert!(table.pick(&[]).is_none(), "no upstream, no pick");
        table.apply(&file("v1", &[("a", "10.0.0.1"), ("b", "10.0.0.2")]));
        let mut seen = names(&table, 4);
        seen.sort();
        assert_eq!(seen, ["a", "a", "b", "b"]);
        assert_eq!(table.version(), "v1");
    }

    #[test]
    fn a_change_keeps_staying_upstreams_and_drains_removed_ones() {
        let table = Table::new();
        table.apply(&file("v1", &[("a", "10.0.0.1"), ("b", "10.0.0.2")]));
        // A request in flight to each.
        let first = table.pick(&[]).unwrap();
        let second = table.pick(&[first.upstream().clone()]).unwrap();
        let (to_a, to_b) = if first.upstream().name() == "a" {
            (first, second)
        } else {
            (second, first)
        };
        assert!(table.drained());

        // b goes, c comes: one change.
        let change = table.apply(&file("v2", &[("a", "10.0.0.1"), ("c", "10.0.0.3")]));
        assert_eq!(
            change,
            Change {
                added: vec!["c".into()],
                removed: vec!["b".into()]
            }
        );
        assert_eq!(table.version(), "v2");
        // New requests never go to b; a kept its in-flight count.
        for name in names(&table, 6) {
            assert_ne!(name, "b");
        }
        assert_eq!(to_a.upstream().in_flight(), 1);
        // b still has a request in flight: not drained until it ends.
        assert!(!table.drained());
        assert_eq!(table.draining_in_flight(), 1);
        drop(to_b);
        assert!(table.drained());
        // The same file again changes nothing.
        assert!(
            table
                .apply(&file("v2", &[("a", "10.0.0.1"), ("c", "10.0.0.3")]))
                .is_empty()
        );
        drop(to_a);
    }

    #[test]
    fn a_removed_upstream_listed_again_comes_back_with_its_requests() {
        let table = Table::new();
        table.apply(&file("v1", &[("a", "10.0.0.1")]));
        let flight = table.pick(&[]).unwrap();
        table.apply(&file("v2", &[]));
        assert!(table.pick(&[]).is_none());
        assert!(!table.drained());
        let change = table.apply(&file("v3", &[("a-renamed", "10.0.0.1")]));
        assert_eq!(change.added, ["a-renamed"]);
        assert!(table.drained(), "a is active again, not draining");
        assert!(Arc::ptr_eq(
            flight.upstream(),
            table.pick(&[]).unwrap().upstream()
        ));
        assert_eq!(flight.upstream().name(), "a-renamed");
    }

    #[test]
    fn a_renamed_upstream_is_the_same_upstream() {
        let table = Table::new();
        table.apply(&file("v1", &[("web-1-next-0a1b", "10.0.0.1")]));
        let change = table.apply(&file("v2", &[("web-1", "10.0.0.1")]));
        assert!(change.is_empty(), "{change:?}");
        assert_eq!(names(&table, 1), ["web-1"]);
    }

    #[test]
    fn pick_skips_tried_and_recently_failed_upstreams() {
        let table = Table::new();
        table.apply(&file("v1", &[("a", "10.0.0.1"), ("b", "10.0.0.2")]));
        let a = table
            .pick(&[])
            .map(|f| f.upstream().clone())
            .filter(|u| u.name() == "a")
            .or_else(|| table.pick(&[]).map(|f| f.upstream().clone()))
            .unwrap();
        assert_eq!(a.name(), "a");
        // Tried: never picked again for the same request.
        for _ in 0..4 {
            assert_eq!(
                table
                    .pick(std::slice::from_ref(&a))
                    .unwrap()
                    .upstream()
                    .name(),
                "b"
            );
        }
        // Failed lately: avoided while another is up...
        table.mark_down(&a, Duration::from_secs(60));
        for name in names(&table, 4) {
            assert_eq!(name, "b");
        }
        // ...but still tried when nothing else is left.
        let b = table
            .pick(std::slice::from_ref(&a))
            .unwrap()
            .upstream()
            .clone();
        assert_eq!(table.pick(&[b]).unwrap().upstream().name(), "a");
        // Every one tried: nothing left.
        let all: Vec<Arc<Upstream>> = vec![a.clone(), table.pick(&[a]).unwrap().upstream().clone()];
        assert!(table.pick(&all).is_none());
    }
}
