//! The nemesis: during the safety phase it keeps breaking things, at random intervals,
//! within the run's fault set. Partitions come in four shapes: random halves, the leader
//! alone, a bridge (two sides that only one node can talk to), and one-way links; links can
//! also turn slow, one way.

use synod_core::{NodeId, Role};

use crate::disk::Unsynced;
use crate::protocol::Protocol;
use crate::world::{Event, World};
use crate::TICK_US;

/// Shortest and longest time a crashed node stays down, in ticks.
const DOWNTIME_TICKS: (u64, u64) = (20, 400);
/// Shortest and longest pause of a process, in ticks: from a hiccup to longer than a
/// lease's TTL.
const PAUSE_TICKS: (u64, u64) = (5, 300);

impl<P: Protocol> World<P> {
    /// Starts the nemesis.
    pub(crate) fn start_nemesis(&mut self) {
        self.nemesis_on = true;
        self.schedule_nemesis();
    }

    fn schedule_nemesis(&mut self) {
        let (shortest, longest) = self.config.nemesis_interval_ticks;
        let wait = self
            .nemesis_rng
            .range_inclusive(shortest, longest.max(shortest))
            * TICK_US;
        self.schedule(wait, Event::Nemesis);
    }

    pub(crate) fn on_nemesis(&mut self) {
        if !self.nemesis_on {
            return;
        }
        let faults = self.config.faults;
        type Act<P> = fn(&mut World<P>);
        let mut choices: Vec<Act<P>> = Vec::new();
        // A partition needs two nodes to separate.
        if faults.partition && self.everyone.len() >= 2 {
            let partitions: [Act<P>; 6] = [
                Self::partition_halves,
                Self::isolate_leader,
                Self::bridge,
                Self::one_way,
                Self::heal_partition,
                Self::heal_partition,
            ];
            choices.extend(partitions);
        }
        if faults.crash {
            let crashes: [Act<P>; 2] = [Self::crash_one, Self::crash_leader];
            choices.extend(crashes);
        }
        if faults.disk && !P::needs_every_member(&self.options) {
            choices.push(Self::damage_disk);
        }
        if faults.disk && faults.crash {
            choices.push(Self::arm_power_loss);
        }
        if faults.leader_race && self.everyone.len() >= 3 {
            choices.extend([Self::start_race as Act<P>, Self::move_leader]);
        }
        if faults.pause {
            choices.extend([Self::pause_node as Act<P>, Self::pause_node]);
        }
        if faults.delay && self.everyone.len() >= 2 {
            choices.push(Self::slow_links);
        }
        if faults.delay && faults.leader_race && self.everyone.len() >= 3 {
            choices.push(Self::move_leader_heard_late);
        }
        if faults.disk && faults.crash && P::REJOINS_EMPTY {
            choices.push(Self::replace_disk);
        }
        if faults.membership && P::CHANGES_MEMBERSHIP {
            choices.extend([Self::change_membership as Act<P>, Self::change_membership]);
        }
        if let Some(&action) = self.nemesis_rng.pick(&choices) {
            action(self);
        }
        self.schedule_nemesis();
    }

    /// Every node but `excluded`, in id order.
    fn nodes_except(&self, excluded: &[NodeId]) -> Vec<NodeId> {
        self.everyone
            .iter()
            .copied()
            .filter(|n| !excluded.contains(n))
            .collect()
    }

    fn shuffled_nodes(&mut self) -> Vec<NodeId> {
        let mut nodes = self.everyone.clone();
        self.nemesis_rng.shuffle(&mut nodes);
        nodes
    }

    fn partition_halves(&mut self) {
        let nodes = self.shuffled_nodes();
        let split = self.nemesis_rng.range(1, nodes.len() as u64) as usize;
        let (a, b) = nodes.split_at(split);
        self.network.blocked.clear();
        self.network.cut(a, b);
        self.fault_line(|| format!("partition {} | {}", names(a), names(b)));
    }

    /// The node most recently seen leading, or a random node.
    fn likely_leader(&mut self) -> NodeId {
        let leader = self
            .nodes
            .iter()
            .filter_map(|n| {
                n.status
                    .filter(|s| s.role == Role::Leader)
                    .map(|s| (s.era, n.id))
            })
            .max()
            .map(|(_, id)| id);
        match leader {
            Some(id) => id,
            None => self.everyone[self.nemesis_rng.index(self.everyone.len())],
        }
    }

    fn isolate_leader(&mut self) {
        let leader = self.likely_leader();
        let rest = self.nodes_except(&[leader]);
        self.network.blocked.clear();
        self.network.cut(&[leader], &rest);
        self.fault_line(|| format!("isolate {leader}"));
    }

    fn bridge(&mut self) {
        let nodes = self.shuffled_nodes();
        if nodes.len() < 3 {
            return self.partition_halves();
        }
        let (bridge, rest) = nodes.split_first().expect("at least 3 nodes");
        let split = self.nemesis_rng.range(1, rest.len() as u64) as usize;
        let (a, b) = rest.split_at(split);
        self.network.blocked.clear();
        self.network.cut(a, b);
        self.fault_line(|| format!("bridge {bridge} between {} and {}", names(a), names(b)));
    }

    fn one_way(&mut self) {
        self.network.blocked.clear();
        let links = self.nemesis_rng.range(1, self.everyone.len() as u64 + 1);
        for _ in 0..links {
            let nodes = self.shuffled_nodes();
            self.network.blocked.insert((nodes[0], nodes[1]));
        }
        let blocked: Vec<_> = self
            .network
            .blocked
            .iter()
            .map(|(a, b)| format!("{a}->{b}"))
            .collect();
        self.fault_line(|| format!("one-way cuts {}", blocked.join(" ")));
    }

    fn heal_partition(&mut self) {
        if !self.network.blocked.is_empty() || !self.network.slow.is_empty() {
            self.network.blocked.clear();
            self.network.slow.clear();
            self.fault_line(|| "partition healed".to_string());
        }
    }

    /// Slows one to three links, one way each, by 10 to 120 ms: acknowledgements that
    /// arrive late, and a leader that hears of its successor late.
    fn slow_links(&mut self) {
        self.network.slow.clear();
        let links = self.nemesis_rng.range_inclusive(1, 3);
        for _ in 0..links {
            let nodes = self.shuffled_nodes();
            let (from, to) = (nodes[0], nodes[1]);
            let extra = self.nemesis_rng.range_inclusive(10, 120) * 1_000;
            self.network.slow.insert((from, to), extra);
            self.fault_line(|| format!("{from} -> {to} slowed by {} ms", extra / 1000));
        }
    }

    /// Crashes `node` if that leaves at most a minority down, and schedules its restart.
    fn crash_node(&mut self, node: NodeId) {
        let unsynced = if self.config.faults.disk {
            Unsynced::Torn
        } else {
            Unsynced::Lost
        };
        self.crash_node_leaving(node, unsynced);
    }

    /// As [`World::crash_node`], its unsynced writes treated as `unsynced` says. Returns
    /// whether the disk was left with garbage.
    fn crash_node_leaving(&mut self, node: NodeId, unsynced: Unsynced) -> bool {
        // Down voters stay within a minority of the voters; anyone else may go down.
        let voting = self.voting();
        let down = voting.iter().filter(|&&v| !self.is_up(v)).count();
        let minority = (voting.len().max(1) - 1) / 2;
        if (voting.contains(&node) && down + 1 > minority) || !self.is_up(node) {
            return false;
        }
        self.fault_line(|| format!("crash {node}"));
        let garbage = self.crash_leaving(node, unsynced);
        let downtime = self.nemesis_rng.range(DOWNTIME_TICKS.0, DOWNTIME_TICKS.1) * TICK_US;
        self.schedule(downtime, Event::Restart { node });
        garbage
    }

    fn crash_one(&mut self) {
        let node = self.everyone[self.nemesis_rng.index(self.everyone.len())];
        self.crash_node(node);
    }

    /// Crashes a node (within the fault budget) and damages its disk: the sectors of its
    /// unsynced writes that never reached the disk read back as stale garbage, or a bit of
    /// what it stored flips. Neither can be told from the other, so the node must refuse to
    /// start; it then stays down, counted against the budget.
    fn damage_disk(&mut self) {
        let node = self.everyone[self.nemesis_rng.index(self.everyone.len())];
        let mut damage = None;
        if self.is_up(node) {
            let unsynced = if self.nemesis_rng.chance(0.5) {
                Unsynced::Garbage
            } else {
                Unsynced::Torn
            };
            if self.crash_node_leaving(node, unsynced) {
                damage = Some("garbage into sectors its last write never reached".to_string());
            }
        }
        if self.is_up(node) || self.node(node).dead {
            return;
        }
        let damage = damage.or_else(|| {
            let flipped = self.nodes[node.0 as usize - 1]
                .disk
                .corrupt(&mut self.nemesis_rng)?;
            Some(format!("flips {flipped}"))
        });
        let Some(damage) = damage else {
            return;
        };
        self.node_mut(node).damaged = true;
        self.stats.disks_damaged += 1;
        self.fault_line(|| format!("{node} {damage}"));
    }

    /// Crashes a node (within the fault budget) and gives it a new, empty disk, as an
    /// operator replacing a failed one would: it restarts with nothing and must catch up
    /// from its peers without reusing a version of its earlier life.
    fn replace_disk(&mut self) {
        let node = self.everyone[self.nemesis_rng.index(self.everyone.len())];
        if !self.is_up(node) {
            return;
        }
        self.crash_node_leaving(node, Unsynced::Lost);
        if self.is_up(node) {
            return; // over the fault budget
        }
        let bugs = self.config.storage_bugs;
        let fresh = crate::disk::NodeDisk::new(node.0, bugs);
        let n = self.node_mut(node);
        n.disk = fresh;
        n.replaced = true;
        n.damaged = false;
        self.stats.disks_replaced += 1;
        self.fault_line(|| format!("{node} gets a new, empty disk"));
    }

    /// Arms a power loss at a node: it crashes while its next write is on its way to the
    /// disk, before the sync, so that write may survive torn (a prefix, or zeroed sectors).
    /// Crashes at random moments rarely catch a write in flight; this one always does.
    ///
    /// Half the time the process is killed first (the kernel keeps what it wrote, synced or
    /// not, and the next life reads it back) and the power fails at the next life's first
    /// write: what that life read and acted on must have been made durable before.
    fn arm_power_loss(&mut self) {
        let node = self.everyone[self.nemesis_rng.index(self.everyone.len())];
        if !self.is_up(node) {
            return;
        }
        if self.kill_rng.chance(0.5) {
            self.crash_node_leaving(node, Unsynced::Kept);
            if self.is_up(node) {
                return; // over the fault budget
            }
            self.fault_line(|| format!("{node} killed; power loss armed for its next life"));
        } else {
            self.fault_line(|| format!("power loss armed at {node}, for its next write"));
        }
        // Armed after the kill (a crash disarms): then it waits for the next life's first write.
        self.node_mut(node).power_loss_armed = true;
    }

    pub(crate) fn on_power_loss(&mut self, node: NodeId, incarnation: u64) {
        if self.nemesis_on && self.node(node).incarnation == incarnation {
            self.fault_line(|| format!("power loss at {node} during a write"));
            self.crash_node(node);
        }
    }

    /// A leader-change race, in five stages. First the leader's messages reach only one
    /// follower, its buddy, for a few ticks: what it proposes then is accepted by the two of
    /// them alone. Then everything gets through for a tick or two, before the leader resends
    /// what was lost: what it proposes now is accepted by all, so its log has a hole. Then
    /// the two are cut off from the rest for about an election, long enough for the rest to
    /// elect a new leader and decide the hole, perhaps short enough that the old leader has
    /// not yet noticed. Then the old leader reaches the rest again (a bridge between them and
    /// its buddy), and may fill its hole from the new leader's side while it still leads and
    /// its buddy still follows it. Then the network heals.
    fn start_race(&mut self) {
        let leader = self.likely_leader();
        let others = self.nodes_except(&[leader]);
        let buddy = others[self.nemesis_rng.index(others.len())];
        self.network.blocked.clear();
        for &n in others.iter().filter(|&&n| n != buddy) {
            self.network.blocked.insert((leader, n));
        }
        self.fault_line(|| format!("race: {leader} reaches only {buddy}"));
        let wait = self.nemesis_rng.range_inclusive(1, 3) * TICK_US;
        let stage = RaceStage::Reopen;
        self.schedule(
            wait,
            Event::Race {
                leader,
                buddy,
                stage,
            },
        );
    }

    /// An operator moves the leadership to another member (etcd's MoveLeader), while clients
    /// keep working: under Raft the target campaigns at once, without waiting for the leader
    /// to fall silent, so the old leader may still answer for a moment after the new one won.
    ///
    /// Under a protocol that fails over only by an operator's word (synchronous
    /// primary-backup), the operator also acts when the leader is down, at a member that is
    /// up: that is how such a cluster gets a new primary.
    fn move_leader(&mut self) {
        let leader = self.likely_leader();
        let serving = |w: &Self, n: NodeId| w.is_up(n) && !w.paused.contains_key(&n);
        let at = if serving(self, leader) {
            leader
        } else if synod_replica::fails_over_by_operator(P::NAME) {
            let up: Vec<NodeId> = self
                .nodes_except(&[leader])
                .into_iter()
                .filter(|&n| serving(self, n))
                .collect();
            if up.is_empty() {
                return;
            }
            up[self.nemesis_rng.index(up.len())]
        } else {
            return;
        };
        let mut others = self.nodes_except(&[leader]);
        if synod_replica::fails_over_by_operator(P::NAME) {
            // The operator fails over to a voter, as `member list` shows them: any other
            // member would refuse (a removed one that does not know it, not always).
            let voting = self.voting();
            others.retain(|n| voting.contains(n));
            if others.is_empty() {
                return;
            }
        }
        let target = others[self.nemesis_rng.index(others.len())];
        self.fault_line(|| format!("move the leadership from {leader} to {target}, told to {at}"));
        self.step(at, |replica, out| replica.transfer_leadership(target, out));
    }

    /// Slows every link into the leader by 20 to 70 ms, then moves the leadership: the old
    /// leader hears late both the answers to what it asked just before (a read round that
    /// confirms a lease keep-alive) and the news of its successor, who takes over at once. Its
    /// last answers may then leave after the successor's lease clocks started.
    fn move_leader_heard_late(&mut self) {
        let leader = self.likely_leader();
        if !self.is_up(leader) || self.paused.contains_key(&leader) {
            return;
        }
        self.network.slow.clear();
        let extra = self.nemesis_rng.range_inclusive(20, 70) * 1_000;
        for from in self.nodes_except(&[leader]) {
            self.network.slow.insert((from, leader), extra);
        }
        let others = self.nodes_except(&[leader]);
        let target = others[self.nemesis_rng.index(others.len())];
        self.fault_line(|| {
            format!(
                "links into {leader} slowed by {} ms; move the leadership to {target}",
                extra / 1000
            )
        });
        self.step(leader, |replica, out| {
            replica.transfer_leadership(target, out)
        });
    }

    pub(crate) fn on_race(&mut self, leader: NodeId, buddy: NodeId, stage: RaceStage) {
        if !self.nemesis_on {
            return;
        }
        let (next, wait) = match stage {
            RaceStage::Reopen => {
                self.network.blocked.clear();
                self.fault_line(|| format!("race: {leader} reaches all"));
                (RaceStage::CutOff, self.nemesis_rng.range_inclusive(1, 2))
            }
            RaceStage::CutOff => {
                let pair = [leader, buddy];
                let rest = self.nodes_except(&pair);
                self.network.blocked.clear();
                self.network.cut(&pair, &rest);
                self.fault_line(|| format!("race: {leader},{buddy} cut off"));
                (RaceStage::Bridge, self.nemesis_rng.range_inclusive(16, 30))
            }
            RaceStage::Bridge => {
                let rest = self.nodes_except(&[leader, buddy]);
                self.network.blocked.clear();
                self.network.cut(&[buddy], &rest);
                self.fault_line(|| format!("race: {leader} bridges {buddy} and the rest"));
                (RaceStage::Heal, self.nemesis_rng.range_inclusive(3, 15))
            }
            RaceStage::Heal => return self.heal_partition(),
        };
        let stage = next;
        self.schedule(
            wait * TICK_US,
            Event::Race {
                leader,
                buddy,
                stage,
            },
        );
    }

    /// Pauses a node, the leader two times in three: it stops in the middle of whatever it
    /// was doing and resumes later, unaware of the gap.
    fn pause_node(&mut self) {
        let node = if self.nemesis_rng.range(0, 3) == 0 {
            self.everyone[self.nemesis_rng.index(self.everyone.len())]
        } else {
            self.likely_leader()
        };
        if !self.is_up(node) || self.paused.contains_key(&node) {
            return;
        }
        let (shortest, longest) = PAUSE_TICKS;
        let ticks = self.nemesis_rng.range_inclusive(shortest, longest);
        self.paused.insert(node, Vec::new());
        self.stats.pauses += 1;
        self.fault_line(|| format!("pause {node} for {ticks} ticks"));
        let incarnation = self.node(node).incarnation;
        self.schedule(ticks * TICK_US, Event::Resume { node, incarnation });
    }

    /// A paused node carries on: what reached it meanwhile arrives now, in order, and its
    /// clock ticks again (once at once, as a timer that missed its ticks does).
    pub(crate) fn resume(&mut self, node: NodeId) {
        let Some(waiting) = self.paused.remove(&node) else {
            return;
        };
        self.trace_line(|| format!("{node} resumes ({} events waited)", waiting.len()));
        // Its timer fires first: it looks at its clocks before it reads what waited.
        if self.is_up(node) {
            let incarnation = self.node(node).incarnation;
            self.schedule(0, Event::Tick { node, incarnation });
        }
        for event in waiting {
            self.schedule(0, event);
        }
    }

    fn crash_leader(&mut self) {
        let node = self.likely_leader();
        let was_up = self.is_up(node);
        self.crash_node(node);
        if was_up && !self.is_up(node) {
            self.leader_crashed_at.get_or_insert(self.now);
        }
    }
}

/// The stages of a leader-change race after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RaceStage {
    /// Let the leader reach everyone again.
    Reopen,
    /// Cut the leader and its buddy off from the rest.
    CutOff,
    /// Let the leader reach the rest again, its buddy not yet.
    Bridge,
    /// Heal the network.
    Heal,
}

/// `n1,n2,n3`.
fn names(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
