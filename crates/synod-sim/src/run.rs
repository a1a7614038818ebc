//! One seeded run: a safety phase under faults, then heal, then a liveness phase in which
//! new writes must commit, then a quiet settle after which every replica must agree. The
//! clients' whole history is then checked for linearizability.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use synod_check::{check_kv, Verdict};
use synod_core::NodeId;

use crate::faults::FaultSet;
use crate::intervention::Intervention;
use crate::protocol::Protocol;
use crate::report::{RunReport, ViolationKind};
use crate::timeline::Document;
use crate::world::World;
use crate::TICK_US;

/// Everything that shapes one run besides the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// Decides every random choice of the run.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Faults the nemesis and the network may inject during the safety phase.
    pub faults: FaultSet,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys the clients touch.
    pub keys: u64,
    /// Length of the safety phase, in ticks.
    pub safety_ticks: u64,
    /// Length of the liveness phase; a write invoked after the heal must complete within it.
    pub liveness_ticks: u64,
    /// Quiet time at the end, without new operations, before replicas are compared.
    pub settle_ticks: u64,
    /// Shortest and longest wait between two nemesis actions, in ticks.
    pub nemesis_interval_ticks: (u64, u64),
    /// A node snapshots its state machine and compacts its log every this many applied
    /// entries (0: never).
    pub snapshot_every: u64,
    /// Start client i at node i (mod the cluster size) rather than a random one, so that
    /// every node has clients of its own (dueling proposers in Basic Paxos).
    pub spread_clients: bool,
    /// Keep a readable trace.
    pub trace: bool,
    /// Record the run for a viewer (the JSON of `docs/trace-format.md`).
    pub record: bool,
    /// What a viewer does to the run, in time order.
    pub interventions: Vec<Intervention>,
    /// Storage rules broken on purpose (test builds), to prove the sweep catches them.
    pub storage_bugs: synod_storage::InjectedBugs,
    /// Lease rules broken on purpose (test builds), to prove the lease checker catches them.
    pub lease_bugs: synod_replica::LeaseBugs,
    /// Lease holders that stop renewing sometimes revoke their lease about when its TTL runs
    /// out and grant its id again at once: the revoke and the grant race the keeper's expiry
    /// of the lease they replace.
    pub late_revokes: bool,
}

impl RunConfig {
    /// Defaults: every fault, a nemesis action every 20 to 300 ticks, 5 clients on 5 keys,
    /// a snapshot every 200 applied entries, 3,000 ticks of faults, 1,000 ticks of liveness,
    /// 300 ticks to settle.
    pub fn new(seed: u64, nodes: usize) -> RunConfig {
        RunConfig {
            seed,
            nodes,
            faults: FaultSet::ALL,
            clients: 5,
            keys: 5,
            safety_ticks: 3_000,
            liveness_ticks: 1_000,
            settle_ticks: 300,
            nemesis_interval_ticks: (20, 300),
            snapshot_every: 200,
            spread_clients: false,
            trace: false,
            record: false,
            interventions: Vec::new(),
            storage_bugs: synod_storage::InjectedBugs::NONE,
            lease_bugs: synod_replica::LeaseBugs::NONE,
            late_revokes: false,
        }
    }
}

/// A finished run: its report and, if asked for, its trace and its recording.
#[derive(Debug)]
pub struct RunOutcome {
    /// What the run found.
    pub report: RunReport,
    /// The readable trace; empty unless `trace` was set.
    pub trace: String,
    /// The run for a viewer, as the JSON of `docs/trace-format.md`, if `record` was set.
    pub recording: Option<String>,
}

thread_local! {
    /// Where the last panic on this thread happened, when [`report_panics_quietly`] is on.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the process's panic hook with one that prints nothing and remembers where the
/// panic happened, so that a sweep reports panics once, in its summary, with their location.
/// For command-line tools; tests keep the default hook.
pub fn report_panics_quietly() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(format!("{message}{location}")));
    }));
}

/// Runs one seed to the end (or to its first violation).
pub fn run<P: Protocol>(config: &RunConfig, options: &P::Options) -> RunOutcome {
    let mut world = World::<P>::new(config.clone(), options.clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| play(&mut world)));
    if let Err(panic) = outcome {
        let message = LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        world.fail(ViolationKind::Panic, message);
    }
    let live_preemptions: u64 = world
        .nodes
        .iter()
        .filter_map(|n| n.engine())
        .map(|e| e.preemptions())
        .sum();
    world.stats.preemptions += live_preemptions;
    let recording = world.timeline.as_ref().map(|timeline| {
        timeline.document(Document {
            run: run_fields::<P>(config, options, &world),
            members: &world.everyone,
            history: world.history.operations(),
            violation: world.violation.as_ref().map(|v| {
                let at = world.violated_at.unwrap_or(world.now);
                (v.kind.to_string(), v.detail.clone(), at)
            }),
            linearizable: world.linearizable,
        })
    });
    RunOutcome {
        report: RunReport {
            seed: config.seed,
            stats: world.stats.clone(),
            ticks: world.now / TICK_US,
            violation: world.violation.clone(),
        },
        trace: world.trace.text().to_string(),
        recording,
    }
}

/// The `synod sim` command line that replays this run (a viewer's interventions aside).
pub fn replay_command<P: Protocol>(config: &RunConfig, options: &P::Options) -> String {
    format!(
        "synod sim --protocol {}{}{} --nodes {} --seed {} --faults {} --clients {} --keys {} \
         --safety-ticks {} --liveness-ticks {} --snapshot-every {}",
        P::NAME,
        P::replay_flags(options),
        if config.spread_clients {
            " --spread-clients"
        } else {
            ""
        },
        config.nodes,
        config.seed,
        config.faults,
        config.clients,
        config.keys,
        config.safety_ticks,
        config.liveness_ticks,
        config.snapshot_every,
    )
}

/// The `run` object of a recording: what shaped the run, and the command that replays it.
fn run_fields<P: Protocol>(config: &RunConfig, options: &P::Options, world: &World<P>) -> String {
    let replay = replay_command::<P>(config, options);
    let mut out = String::new();
    out.push_str("\"protocol\":");
    crate::timeline::string(&mut out, P::NAME);
    out.push_str(&format!(
        ",\"nodes\":{},\"seed\":{},\"faults\":\"{}\",\"clients\":{},\"spread_clients\":\"{}\",\"keys\":{},\
         \"safety_ticks\":{},\"liveness_ticks\":{},\"snapshot_every\":{},\"tick_us\":{TICK_US},\
         \"healed_at\":{},\"ended_at\":{},\"interventions\":",
        config.nodes,
        config.seed,
        config.faults,
        config.clients,
        if config.spread_clients { "on" } else { "off" },
        config.keys,
        config.safety_ticks,
        config.liveness_ticks,
        config.snapshot_every,
        world
            .healed_at
            .map_or("null".to_string(), |t| t.to_string()),
        world.now,
    ));
    crate::timeline::string(
        &mut out,
        &Intervention::list_to_string(&config.interventions),
    );
    out.push_str(",\"replay\":");
    crate::timeline::string(&mut out, &replay);
    out
}

fn play<P: Protocol>(world: &mut World<P>) {
    let config = world.config.clone();
    world.add_clients(config.clients);
    if config.faults != FaultSet::NONE {
        world.start_nemesis();
    }
    world.run_until(config.safety_ticks * TICK_US);
    if world.violation.is_some() {
        return;
    }
    world.heal_everything();
    let healed = world.now;
    world.run_until(healed + config.liveness_ticks * TICK_US);
    // A viewer who crashed or cut something after the heal may have stopped the cluster on
    // purpose: it is healed again, and the final checks judge what the protocol did.
    let viewer_after_heal = world.intervened_at.is_some_and(|t| t >= healed);
    if viewer_after_heal && world.violation.is_none() {
        world.heal_everything();
    }
    if world.violation.is_none() && world.recovered_at().is_none() && !viewer_after_heal {
        let detail = format!(
            "no write invoked after the heal completed within {} ticks",
            config.liveness_ticks
        );
        world.fail(ViolationKind::Liveness, detail);
    }
    world.stop_clients();
    // Leases their holders no longer renew must all expire before the end, and the log must
    // be still again after the last expiry.
    let lapse = crate::lease::LAPSE_BOUND_US;
    world.run_until(healed + (config.liveness_ticks + config.settle_ticks) * TICK_US + lapse);
    if world.violation.is_none() {
        world.final_checks();
    }
}

impl<P: Protocol> World<P> {
    /// Ends the safety phase: the nemesis stops, the network heals, crashed nodes restart
    /// (except those whose disk was found damaged: they stay down, within the fault budget).
    pub(crate) fn heal_everything(&mut self) {
        self.nemesis_on = false;
        self.network.heal();
        let paused: Vec<NodeId> = self.paused.keys().copied().collect();
        for id in paused {
            self.resume(id);
        }
        for id in self.everyone.clone() {
            self.restart(id);
        }
        self.healed_at = Some(self.now);
        self.note_line(|| "heal: network healed, every node up".to_string());
        self.record_world();
    }

    /// Clients finish what they are doing and start nothing new.
    pub(crate) fn stop_clients(&mut self) {
        for client in &mut self.clients {
            client.active = false;
        }
    }

    /// After settling: invariants once more, replicas equal, and the history linearizable
    /// (for a protocol that promises it; for one that does not, a history without a
    /// linearization is counted, not failed). An acknowledged write that was lost needs no
    /// check of its own: the write was applied before it was acknowledged, and losing it
    /// means some node applies another command at its index, a state machine safety
    /// violation caught as it happens.
    pub(crate) fn final_checks(&mut self) {
        if let Err(e) = self.audit() {
            return self.fail(ViolationKind::Safety, e);
        }
        if let Err(e) = self.check_convergence() {
            return self.fail(ViolationKind::Convergence, e);
        }
        if let Err(e) = self.check_kept() {
            return self.fail(ViolationKind::Safety, e);
        }
        if let Err(e) = self.check_lapsed_leases() {
            return self.fail(ViolationKind::Liveness, e);
        }
        if let Err(e) = self.check_published() {
            return self.fail(ViolationKind::Liveness, e);
        }
        let verdict = check_kv(self.history.operations());
        if !synod_replica::is_linearizable(P::NAME) {
            self.linearizable = "not promised";
            if matches!(verdict, Verdict::Violation(_)) {
                self.stats.not_linearizable += 1;
            }
            return;
        }
        self.linearizable = match verdict {
            Verdict::Linearizable => "yes",
            Verdict::Violation(_) => "no",
            Verdict::Inconclusive { .. } => "undecided",
        };
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Violation(v) => self.fail(ViolationKind::Linearizability, v.to_string()),
            Verdict::Inconclusive { keys } => self.fail(
                ViolationKind::Linearizability,
                format!(
                    "the checker ran out of budget on {}; the history could not be decided",
                    synod_check::key_list(&keys)
                ),
            ),
        }
    }

    /// Under a protocol that does not order writes: every acknowledged write is held by
    /// every replica at its version or a newer one (at ONE, unless the member that took it
    /// lost its disk for good).
    pub(crate) fn check_kept(&self) -> Result<(), String> {
        if P::ORDERS_WRITES {
            return Ok(());
        }
        // The members of the final membership hold every acknowledged write (a removed
        // member handed over what it held; a spare never added holds nothing).
        let members = self.final_members();
        let replicas = self
            .nodes
            .iter()
            .filter(|n| members.as_ref().is_none_or(|m| m.contains(&n.id)))
            .filter_map(|n| n.engine().map(|e| (n.id, e)));
        // Members that lost their disk for good, or had it replaced by an empty one.
        let dead: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.dead || n.replaced)
            .map(|n| n.id)
            .collect();
        let one = P::acknowledges_alone(&self.options);
        let lost_with = |node: NodeId| one && dead.contains(&node);
        self.safety.versions.check_kept(replicas, lost_with)
    }

    /// Every node still in service is up, has committed and applied the same log, and holds
    /// the same state.
    pub(crate) fn check_convergence(&self) -> Result<(), String> {
        // Under membership changes, the members of the final membership (removed nodes and
        // spares never added hold what they held when they left, or nothing).
        let members = self.final_members();
        let serving: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| !n.dead && members.as_ref().is_none_or(|m| m.contains(&n.id)))
            .collect();
        let first = serving.first().ok_or("every node's disk was damaged")?;
        let down = |id: NodeId| format!("{id} is down");
        if !P::ORDERS_WRITES {
            // Each replica applied under indices of its own: what must agree is the
            // versions the engines hold and the data (not the revisions) of the stores.
            let state = |node: &crate::node::SimNode<P>| {
                let engine = node.engine().ok_or_else(|| down(node.id))?;
                let replica = node.replica.as_ref().ok_or_else(|| down(node.id))?;
                let kv = replica.store().read();
                let data: Vec<(bytes::Bytes, bytes::Bytes)> =
                    kv.values().map(|(k, v)| (k.clone(), v.clone())).collect();
                Ok::<_, String>((engine.fingerprint(), data))
            };
            let reference = state(first)?;
            for node in &serving {
                let (print, data) = state(node)?;
                if print != reference.0 {
                    return Err(format!(
                        "{} and {} hold different versions after the heal",
                        node.id, first.id
                    ));
                }
                if data != reference.1 {
                    return Err(format!(
                        "{} and {} hold the same versions but different data",
                        node.id, first.id
                    ));
                }
            }
            return Ok(());
        }
        let (_, reference) = first.store_snapshot().ok_or_else(|| down(first.id))?;
        let first_commit = first
            .engine()
            .map(|e| e.status().commit_index)
            .ok_or_else(|| down(first.id))?;
        for node in &serving {
            let engine = node.engine().ok_or_else(|| down(node.id))?;
            let commit = engine.status().commit_index;
            let (applied, state) = node.store_snapshot().ok_or_else(|| down(node.id))?;
            if commit != first_commit || applied != commit {
                return Err(format!(
                    "{} committed {commit} and applied {applied}, {} committed {first_commit}",
                    node.id, first.id,
                ));
            }
            if state != reference {
                return Err(format!(
                    "{} and {} applied the same log into different states",
                    node.id, first.id
                ));
            }
        }
        Ok(())
    }
}
