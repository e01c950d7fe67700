//! The rolling replacement of a `docker_container`
//! ([`Provider::replace`](berth_provider::Provider::replace)): the old
//! replicas keep serving while new ones come up, one at a time (or
//! `max_parallel` at a time), each health-gated before an old one goes.
//!
//! Which cases roll, and how (see [`Spec::rolls`] for when the engine asks):
//!
//! * **Side by side** (no fixed host port on the replicas: none published,
//!   or published by the load balancer): the new replica starts as
//!   `<final name>-next-<hex>` next to the old one and must become ready
//!   (Docker's health check, berth's HTTP check, or running). Then, with a
//!   load balancer, one change puts the new replica in and takes the old
//!   one out; once the old one has drained (the proxy says when its last
//!   request is done; nginx gets `load_balancer { drain }`), it is renamed
//!   out of the way (`-prev-<hex>`), the new one takes the final name, and
//!   the old one is stopped and removed in the background while the next
//!   replica starts (the rollout waits for those at its end). The load
//!   balancer learns the final names with the next change (or one at the
//!   end): until then it knows the new replica by its temporary name, which
//!   changes nothing for the proxy (it forwards by IP) or for a running
//!   nginx (it resolved the name when it loaded it). Without a load
//!   balancer the switch is the rename:
//!   clients on a Docker network that use the container's name reach the
//!   new one from then on.
//! * **Swap** (the replicas publish fixed host ports themselves: a single
//!   container with `ports { external }` and no `load_balancer`, or a
//!   non-TCP port): the new container is created, the old one stopped to
//!   free the port, the new one started and gated. If it fails, it is
//!   removed and the old one started again. This has a gap; a
//!   `load_balancer` block makes it gapless.
//!
//! A new replica that does not become ready within `wait_timeout` stops the
//! rollout: it is removed, the old replicas keep running as they were, and
//! the error carries its last log lines. Replicas already replaced stay on
//! the new configuration (a re-run continues where it stopped: a replica
//! that already runs the new configuration is skipped). When no old replica
//! runs at all, there is nothing to keep serving: everything is removed and
//! created anew.

use std::path::Path;

use berth_provider::{Applied, ApplyRequest, Progress, ProviderError};

use crate::Conn;
use crate::container::{
    self, Replica, Spec, Target, applied, destroy_grace, list_objects, remove, remove_all, rename,
    resolve_image, stop, stop_and_remove, temporary_name,
};
use crate::lb::{self, Balancer, LbSpec};

/// One replica to replace.
struct Step {
    k: u32,
    final_name: String,
    previous: Option<Replica>,
}

/// The state of a rollout in progress.
struct Rollout<'a> {
    target: &'a Target<'a>,
    spec: &'a Spec,
    /// The load balancer that stays, and its container id.
    balancer: Option<(Balancer<'a>, String)>,
    /// The replicas the load balancer points at now (by their current
    /// names).
    serving: Vec<String>,
    /// Whether the load balancer's configuration still names a replica by
    /// the temporary name it had when it went in.
    stale: bool,
    /// `destroy_grace_seconds` of the old replicas.
    grace: i64,
    /// Old replicas being stopped and removed in the background (they are
    /// out of the load balancer and drained) while the next ones start.
    stopping: Vec<(String, tokio::task::JoinHandle<Result<(), ProviderError>>)>,
    /// How many replicas run the new configuration.
    replaced: usize,
    progress: Progress<'a>,
}

impl Rollout<'_> {
    fn docker(&self) -> &bollard::Docker {
        self.target.docker()
    }

    /// Points the load balancer at `servers` (nothing without one). When
    /// the reload fails, the previous configuration is written back.
    async fn point_lb(&mut self, servers: Vec<String>) -> Result<(), ProviderError> {
        let Some((balancer, id)) = &self.balancer else {
            self.serving = servers;
            return Ok(());
        };
        match balancer.reload(id, &servers, self.progress).await {
            Ok(()) => {
                self.serving = servers;
                self.stale = false;
                Ok(())
            }
            Err(e) => {
                if let Err(again) = balancer.reload(id, &self.serving, self.progress).await {
                    tracing::warn!("restoring the load balancer configuration failed: {again}");
                }
                Err(e)
            }
        }
    }

    /// Takes `names` out of the load balancer and lets it drain.
    async fn take_out(&mut self, names: &[&str]) -> Result<(), ProviderError> {
        if self.balancer.is_none() || !self.serving.iter().any(|s| names.contains(&s.as_str())) {
            return Ok(());
        }
        let staying: Vec<String> = self
            .serving
            .iter()
            .filter(|s| !names.contains(&s.as_str()))
            .cloned()
            .collect();
        self.point_lb(staying).await?;
        self.drain().await;
        Ok(())
    }

    /// Stops and removes `previous` in the background: it serves nothing
    /// any more, so the next replica need not wait for its engine-side
    /// teardown. [`Rollout::join_stops`] collects the outcome.
    fn stop_later(&mut self, previous: &Replica) {
        (self.progress)(&format!(
            "stopping the previous {} (in the background)",
            previous.name
        ));
        let docker = self.docker().clone();
        let id = previous.id.clone();
        let grace = self.grace;
        let task = tokio::spawn(async move { stop_and_remove(&docker, &id, grace).await });
        self.stopping.push((previous.name.clone(), task));
    }

    /// Waits for the background stops; the first failure is the error.
    async fn join_stops(&mut self) -> Result<(), ProviderError> {
        let mut failure = None;
        for (name, task) in std::mem::take(&mut self.stopping) {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) => Err(ProviderError::Api(format!(
                    "stopping the previous {name} did not finish: {e}"
                ))),
            };
            match outcome {
                Ok(()) => (self.progress)(&format!("removed the previous {name}")),
                Err(e) => {
                    tracing::warn!(container = %name, "{e}");
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Waits until the replicas just taken out have finished their requests.
    async fn drain(&self) {
        if let Some((balancer, id)) = &self.balancer {
            balancer.drain(id, self.progress).await;
        }
    }

    /// After a failure: a load balancer that still names a replica by its
    /// temporary name learns the current names (best effort), so a restart
    /// of nginx finds every name it is given.
    async fn settle(&mut self) {
        if self.stale {
            let serving = self.serving.clone();
            if let Err(e) = self.point_lb(serving).await {
                tracing::warn!("updating the load balancer after the failure failed: {e}");
            }
        }
    }

    /// The error that ends the rollout, saying what runs now.
    fn stopped(&self, at: &str, e: ProviderError) -> ProviderError {
        let now = if self.replaced == 0 {
            "No replica was replaced: the previous ones keep running unchanged.".to_owned()
        } else {
            format!(
                "{} of {} replica(s) already run the new configuration; the others keep running \
                 the previous one (apply again to continue).",
                self.replaced, self.spec.replicas
            )
        };
        ProviderError::Api(format!("rolling replacement stopped at {at}: {e}\n{now}"))
    }

    /// Removes containers a failed step created.
    async fn discard(&self, created: &[(String, String)]) {
        for (name, id) in created.iter().rev() {
            (self.progress)(&format!("removing {name} after the failure"));
            if let Err(e) = remove(self.docker(), id).await {
                tracing::warn!(container = %name, "cleanup failed: {e}");
            }
        }
    }

    /// Creates, starts and gates the new replicas of `steps`, each under a
    /// temporary name; `created` gets (name, id) of each in order.
    async fn start_new(
        &self,
        steps: &[Step],
        created: &mut Vec<(String, String)>,
    ) -> Result<(), ProviderError> {
        for step in steps {
            let temp = temporary_name(&step.final_name, "next");
            (self.progress)(&format!(
                "starting {temp} to replace {}",
                step.previous
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or(step.final_name.as_str())
            ));
            let id = self
                .target
                .create_replica_named(self.spec, step.k, &temp, created)
                .await?;
            self.target.start(&id, &temp).await?;
        }
        let started = std::time::Instant::now();
        for (name, id) in created.iter() {
            self.target
                .wait_ready(self.spec, id, name, self.progress)
                .await?;
        }
        (self.progress)(&format!(
            "ready after {:.2}s: {}",
            started.elapsed().as_secs_f64(),
            created
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }

    /// Replaces `steps` with new replicas running beside the old ones.
    async fn side_by_side(&mut self, steps: Vec<Step>) -> Result<(), ProviderError> {
        let at = steps
            .iter()
            .map(|s| s.final_name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut created = Vec::new();
        if let Err(e) = self.start_new(&steps, &mut created).await {
            self.discard(&created).await;
            return Err(self.stopped(&at, e));
        }

        // One change: the new replicas in, the old ones out; then the old
        // ones drain.
        let old_names: Vec<&str> = steps
            .iter()
            .filter_map(|s| s.previous.as_ref().map(|p| p.name.as_str()))
            .collect();
        let mut next: Vec<String> = self
            .serving
            .iter()
            .filter(|s| !old_names.contains(&s.as_str()))
            .cloned()
            .collect();
        let taken_out = next.len() < self.serving.len();
        next.extend(created.iter().map(|(name, _)| name.clone()));
        if let Err(e) = self.point_lb(next).await {
            self.discard(&created).await;
            return Err(self.stopped(&at, e));
        }
        if taken_out {
            self.drain().await;
        }

        // The switch: old names out of the way, new ones take the final
        // names, old replicas go.
        for (step, (_, id)) in steps.iter().zip(&created) {
            if let Some(previous) = &step.previous
                && previous.name == step.final_name
            {
                rename(
                    self.docker(),
                    &previous.id,
                    &temporary_name(&step.final_name, "prev"),
                )
                .await?;
            }
            rename(self.docker(), id, &step.final_name).await?;
            (self.progress)(&format!(
                "{} now runs the new configuration",
                step.final_name
            ));
        }
        for previous in steps.iter().filter_map(|s| s.previous.as_ref()) {
            self.stop_later(previous);
        }
        self.replaced += steps.len();

        // The load balancer learns the final names with its next change.
        let renamed: Vec<String> = self
            .serving
            .iter()
            .map(|s| {
                created
                    .iter()
                    .zip(&steps)
                    .find(|((temp, _), _)| temp == s)
                    .map(|(_, step)| step.final_name.clone())
                    .unwrap_or_else(|| s.clone())
            })
            .collect();
        if renamed != self.serving {
            self.serving = renamed;
            self.stale = self.balancer.is_some();
        }
        Ok(())
    }

    /// Replaces one replica whose fixed host ports the new one needs: the
    /// old one stops first, and is started again if the new one fails.
    async fn swap(&mut self, step: Step) -> Result<(), ProviderError> {
        let at = step.final_name.clone();
        let temp = temporary_name(&step.final_name, "next");
        let mut created = Vec::new();
        (self.progress)(&format!("creating {temp} to replace {}", step.final_name));
        let id = match self
            .target
            .create_replica_named(self.spec, step.k, &temp, &mut created)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.discard(&created).await;
                return Err(self.stopped(&at, e));
            }
        };
        let previous = step.previous.as_ref().filter(|p| p.running);
        if let Some(previous) = previous {
            self.take_out(&[previous.name.as_str()]).await?;
            (self.progress)(&format!(
                "stopping {} to free its host ports",
                previous.name
            ));
            stop(self.docker(), &previous.id, self.grace).await?;
        }
        let started = match self.target.start(&id, &temp).await {
            Ok(()) => {
                self.target
                    .wait_ready(self.spec, &id, &temp, self.progress)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            self.discard(&created).await;
            if let Some(previous) = previous {
                (self.progress)(&format!("starting the previous {} again", previous.name));
                if let Err(again) = self.docker().start_container(&previous.id, None).await {
                    tracing::warn!(container = %previous.name, "cannot start it again: {again}");
                } else {
                    let mut back = self.serving.clone();
                    back.push(previous.name.clone());
                    if let Err(again) = self.point_lb(back).await {
                        tracing::warn!(
                            "cannot put {} back into the load balancer: {again}",
                            previous.name
                        );
                    }
                }
            }
            return Err(self.stopped(&at, e));
        }
        if let Some(previous) = &step.previous {
            (self.progress)(&format!("removing the previous {}", previous.name));
            remove(self.docker(), &previous.id).await?;
        }
        rename(self.docker(), &id, &step.final_name).await?;
        (self.progress)(&format!(
            "{} now runs the new configuration",
            step.final_name
        ));
        self.replaced += 1;
        if self.balancer.is_some() {
            let mut with_new = self.serving.clone();
            with_new.push(step.final_name.clone());
            self.point_lb(with_new).await?;
        }
        Ok(())
    }

    /// Replaces the replicas `ks` batch by batch (`max_parallel` at a
    /// time), skipping those that already run the new configuration, then
    /// removes the old replicas the new configuration has no place for.
    async fn run(
        &mut self,
        old: &[Replica],
        ks: &[u32],
        config_hash: &str,
    ) -> Result<(), ProviderError> {
        let spec = self.spec;
        let mut claimed: Vec<String> = Vec::new();
        let batch_size = usize::try_from(spec.max_parallel).unwrap_or(1).max(1);
        for batch in ks.chunks(batch_size) {
            let mut steps = Vec::new();
            for &k in batch {
                let final_name = spec.replica_name(k);
                let previous = old
                    .iter()
                    .filter(|r| r.index == k && !claimed.contains(&r.id))
                    .min_by_key(|r| r.name != final_name)
                    .cloned();
                if let Some(previous) = &previous {
                    claimed.push(previous.id.clone());
                    if previous.running
                        && previous.name == final_name
                        && previous.config_hash.as_deref() == Some(config_hash)
                        && previous.image_id.as_deref() == Some(self.target.image_id.as_str())
                    {
                        (self.progress)(&format!(
                            "{final_name} already runs the new configuration"
                        ));
                        self.replaced += 1;
                        continue;
                    }
                }
                steps.push(Step {
                    k,
                    final_name,
                    previous,
                });
            }
            if steps.is_empty() {
                continue;
            }
            if spec.has_fixed_ports() {
                for step in steps {
                    self.swap(step).await?;
                }
            } else {
                self.side_by_side(steps).await?;
            }
        }
        let extras: Vec<Replica> = old
            .iter()
            .filter(|r| !claimed.contains(&r.id))
            .cloned()
            .collect();
        self.retire(&extras).await
    }

    /// Removes old replicas the new configuration has no place for.
    async fn retire(&mut self, extras: &[Replica]) -> Result<(), ProviderError> {
        if extras.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = extras.iter().map(|r| r.name.as_str()).collect();
        self.take_out(&names).await?;
        for extra in extras {
            (self.progress)(&format!("removing container {}", extra.name));
            stop_and_remove(self.docker(), &extra.id, self.grace).await?;
        }
        Ok(())
    }
}

/// Replaces the containers of `req.prior` with ones built from
/// `req.config`, rolling (see the module documentation).
pub(crate) async fn replace(
    conn: &Conn,
    req: &ApplyRequest<'_>,
    base_dir: &Path,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let docker = &conn.docker;
    let spec = Spec::parse(req.config, base_dir)?;
    // Pull (or find) the image before anything is touched.
    let image_id = resolve_image(conn, &spec, req.config, progress).await?;
    let target = Target {
        conn,
        address: req.address,
        owner: req.owner,
        config_hash: req.config_hash,
        image_id,
    };
    let grace = destroy_grace(req.prior.unwrap_or(req.config))?;

    let mut objects = list_objects(docker, req.owner, req.address).await?;
    for leftover in &objects.temporaries {
        progress(&format!(
            "removing {} (left over by an interrupted replacement)",
            leftover.name
        ));
        remove(docker, &leftover.id).await?;
    }
    objects.temporaries.clear();

    if !objects.replicas.iter().any(|r| r.running) {
        progress("no container of the previous configuration runs: replacing it without a rollout");
        remove_all(docker, req.owner, req.address, grace, progress).await?;
        return container::create(conn, req, base_dir, progress).await;
    }

    // The load balancer stays when it is what the new configuration wants;
    // otherwise the old one fronts the old replicas while they last and is
    // replaced at the end (or first, when it holds ports the new replicas
    // publish themselves).
    let new_hash = spec.lb.as_ref().map(LbSpec::hash);
    let (kept_lb, mut old_lb) = match objects.lb.clone() {
        Some(lb) if lb.running && lb.lb_hash.is_some() && lb.lb_hash == new_hash => {
            (Some(lb), None)
        }
        other => (None, other),
    };
    if let Some(balancer) = target.balancer(&spec) {
        if kept_lb.is_none() {
            balancer.ensure_image(progress).await?;
        }
        lb::ensure_network(docker, balancer.spec, &target.lb_owner(), progress).await?;
    }
    if spec.has_fixed_ports()
        && let Some(lb) = old_lb.take()
    {
        progress(&format!("removing load balancer {}", lb.name));
        stop_and_remove(docker, &lb.id, 1).await?;
    }

    let balancer = match (&kept_lb, target.balancer(&spec)) {
        (Some(lb), Some(balancer)) => Some((balancer, lb.id.clone())),
        _ => None,
    };
    let mut roll = Rollout {
        target: &target,
        spec: &spec,
        balancer,
        serving: objects
            .replicas
            .iter()
            .filter(|r| r.running)
            .map(|r| r.name.clone())
            .collect(),
        stale: false,
        grace,
        stopping: Vec::new(),
        replaced: 0,
        progress,
    };

    let ks: Vec<u32> = (1..=spec.replicas).collect();
    let ran = roll.run(&objects.replicas, &ks, req.config_hash).await;
    let stopped = roll.join_stops().await;
    if let Err(e) = ran {
        roll.settle().await;
        return Err(e);
    }
    stopped?;

    let wanted: Vec<String> = ks.iter().map(|k| spec.replica_name(*k)).collect();
    let now = list_objects(docker, req.owner, req.address).await?;
    let servers = now.running_names(&wanted);
    if let Some((balancer, id)) = &roll.balancer {
        if servers != roll.serving || roll.stale {
            balancer.reload(id, &servers, progress).await?;
        }
    } else {
        if let Some(lb) = old_lb.take() {
            progress(&format!("removing load balancer {}", lb.name));
            stop_and_remove(docker, &lb.id, 1).await?;
        }
        if let Some(balancer) = target.balancer(&spec) {
            balancer.create(&servers, progress).await?;
        }
    }
    let keep_network = spec
        .lb
        .as_ref()
        .filter(|lb| lb.managed_network)
        .map(|lb| lb.network.as_str());
    lb::remove_networks(docker, req.owner, req.address, keep_network, progress).await?;

    let ids: Vec<String> = wanted
        .iter()
        .filter_map(|name| {
            now.replicas
                .iter()
                .find(|r| &r.name == name)
                .map(|r| r.id.clone())
        })
        .collect();
    Ok(applied(&spec, req.config, &target.image_id, &ids))
}
