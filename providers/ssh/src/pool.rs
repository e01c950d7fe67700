//! [`Pool`]: one SSH connection per host (`user@address:port`), shared by
//! every resource on that host; concurrent callers share one connection
//! attempt, and a connection that has died is replaced on the next `get`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::connect::SshConnection;
use crate::error::SshError;
use crate::host::HostSpec;
use crate::verify::KnownHostStore;

type Slot = Arc<OnceCell<Result<SshConnection, SshError>>>;

/// Connections by [`HostSpec::key`].
///
/// The first spec seen for a key decides how that host is reached; later
/// specs with the same `user@address:port` reuse its connection.
pub struct Pool {
    store: Arc<dyn KnownHostStore>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        f.debug_struct("Pool").field("hosts", &hosts).finish()
    }
}

impl Pool {
    /// An empty pool whose first-use host keys go to `store`.
    pub fn new(store: Arc<dyn KnownHostStore>) -> Self {
        Pool {
            store,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The connection for `spec.key()`, connecting (with retries, see
    /// [`SshConnection::connect`]) if there is none yet or the previous one
    /// closed or failed.
    ///
    /// Callers arriving while a connection attempt is under way wait for it
    /// and receive its result (the same connection, or a clone of the same
    /// error) instead of starting their own; only the first caller's
    /// `progress` is used.
    pub async fn get(
        &self,
        spec: &HostSpec,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<SshConnection, SshError> {
        let key = spec.key();
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let reusable = slots.get(&key).is_some_and(|slot| match slot.get() {
                None => true, // being connected: join that attempt
                Some(Ok(conn)) => !conn.is_closed(),
                Some(Err(_)) => false, // failed earlier: try again
            });
            if !reusable {
                slots.insert(key.clone(), Arc::new(OnceCell::new()));
            }
            slots[&key].clone()
        };
        slot.get_or_init(|| SshConnection::connect(spec, self.store.as_ref(), progress))
            .await
            .clone()
    }

    /// Drops every pooled connection (they close once no [`SshConnection`] or
    /// [`bollard::Docker`] made from them is left).
    pub fn clear(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
