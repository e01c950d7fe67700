//! Who holds a state's lock ([`LockInfo`]), whether that holder is gone, and
//! the message shown to whoever finds the lock taken.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the process holding a lock wrote about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    /// Random id (32 hex characters); `berth force-unlock <id>` names it.
    pub id: String,
    /// What the holder is doing (`plan`, `apply`, `destroy`, ...).
    pub operation: String,
    /// `user@host`.
    pub who: String,
    /// The holder's process id on its host.
    pub pid: u32,
    /// When the lock was taken, RFC 3339 UTC (`2026-11-22T04:00:00Z`).
    pub created: String,
    /// The holder's berth version.
    pub version: String,
    /// The state the lock covers, for messages.
    pub path: String,
}

impl LockInfo {
    /// Info for a lock about to be taken by this process for `operation` on
    /// the state at `path`.
    pub fn new(operation: &str, path: &str) -> LockInfo {
        LockInfo {
            id: hex::encode(rand::random::<[u8; 16]>()),
            operation: operation.to_owned(),
            who: format!("{}@{}", current_user(), current_host()),
            pid: std::process::id(),
            created: rfc3339_utc(SystemTime::now()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            path: path.to_owned(),
        }
    }

    /// The host part of [`who`](Self::who).
    pub fn host(&self) -> &str {
        self.who.rsplit_once('@').map_or("", |(_, host)| host)
    }

    /// Whether the holder is certainly gone: it ran on this host and its pid
    /// is no longer running. A lock from another host is never stale, nor is
    /// any lock when this host has no `/proc` to ask.
    pub fn is_stale(&self) -> bool {
        self.host() == current_host()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// The text of [`StateError::Locked`](crate::StateError::Locked).
pub(crate) fn describe_held(holder: &LockInfo, stale: bool) -> String {
    let mut s = format!(
        "the state is locked by another operation\n  \
         ID:        {}\n  \
         Path:      {}\n  \
         Operation: {}\n  \
         Who:       {}\n  \
         PID:       {}\n  \
         Version:   {}\n  \
         Created:   {}",
        holder.id,
        holder.path,
        holder.operation,
        holder.who,
        if holder.pid == 0 {
            "unknown".to_owned()
        } else {
            holder.pid.to_string()
        },
        if holder.version.is_empty() {
            "unknown"
        } else {
            &holder.version
        },
        holder.created,
    );
    if !stale && holder.pid == 0 && !holder.id.is_empty() {
        s.push_str(&format!(
            "\nthe store does not say which process holds the lock, so berth cannot tell whether \
             it still runs; if no other berth is using this state, `berth force-unlock {}` removes \
             the lock",
            holder.id
        ));
    }
    if stale {
        s.push_str(&format!(
            "\nthe process that took the lock (pid {} on this host) is no longer running; \
             if no other berth is using this state, `berth force-unlock {}` removes the lock",
            holder.pid, holder.id
        ));
    }
    s
}

fn current_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// This host's name: `/etc/hostname`, the kernel's, or `$HOSTNAME`.
pub(crate) fn current_host() -> String {
    ["/etc/hostname", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `t` as RFC 3339 UTC with whole seconds; times before 1970 print as the
/// epoch.
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_795_320_000), "2026-11-22T04:00:00Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn new_describes_this_process() {
        let info = LockInfo::new("apply", "/tmp/state");
        assert_eq!(info.id.len(), 32);
        assert!(info.id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(info.id, LockInfo::new("apply", "/tmp/state").id);
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.host(), current_host());
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.created.len(), "2026-11-22T04:00:00Z".len());
        assert!(!info.is_stale(), "this process is alive");
    }

    #[test]
    fn stale_only_for_a_dead_pid_on_this_host() {
        let mut info = LockInfo::new("apply", "/tmp/state");
        info.pid = 999_999_999;
        assert!(info.is_stale());
        info.who = "someone@elsewhere.invalid".to_owned();
        assert!(!info.is_stale());
    }

    #[test]
    fn message_names_the_holder_and_the_way_out_when_stale() {
        let info = LockInfo {
            id: "abc123".into(),
            operation: "apply".into(),
            who: "root@host".into(),
            pid: 1234,
            created: "2026-11-22T04:00:00Z".into(),
            version: "0.1.0".into(),
            path: "/srv/state".into(),
        };
        let live = describe_held(&info, false);
        assert_eq!(
            live,
            "the state is locked by another operation\n  ID:        abc123\n  Path:      /srv/state\n  Operation: apply\n  Who:       root@host\n  PID:       1234\n  Version:   0.1.0\n  Created:   2026-11-22T04:00:00Z"
        );
        let stale = describe_held(&info, true);
        assert!(stale.starts_with(&live));
        assert!(stale.contains("pid 1234 on this host"));
        assert!(stale.contains("`berth force-unlock abc123`"));

        // A store that keeps no pid (GitLab): unknown, with the way out.
        let anonymous = LockInfo {
            pid: 0,
            version: String::new(),
            ..info
        };
        let text = describe_held(&anonymous, false);
        assert!(text.contains("PID:       unknown"), "{text}");
        assert!(text.contains("Version:   unknown"), "{text}");
        assert!(text.contains("cannot tell whether it still runs"), "{text}");
        assert!(text.contains("`berth force-unlock abc123`"), "{text}");
    }
}
