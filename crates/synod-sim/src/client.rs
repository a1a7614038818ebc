//! Simulated clients, behaving as real etcd clients do: one operation at a time, sent to the
//! node believed to lead, redirected on "not leader", retried elsewhere after a timeout with
//! the same request id (so the state machine applies a write at most once), and abandoned
//! after a deadline. Every operation goes into the history the checker reads.
//!
//! An abandoned write is recorded as indeterminate (it may still take effect) unless every
//! attempt was definitely refused, in which case it failed and had no effect. An abandoned
//! read is a failure: a read that returns nothing constrains nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use synod_check::{Key, KvInput, KvOutput, OpId, Value};
use synod_core::{NodeId, RequestId, Rng};
use synod_kv::{
    Applied, Compare, CompareOp, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, Request,
    Response, TxnRequest,
};

use crate::protocol::Protocol;
use crate::world::{ClientRequest, Event, Reply, World};
use crate::TICK_US;

/// An attempt unanswered for this long is retried at another node.
const ATTEMPT_TIMEOUT_US: u64 = 30 * TICK_US;
/// An operation unanswered for this long is abandoned.
const GIVE_UP_AFTER_US: u64 = 200 * TICK_US;
/// Retries after a refusal back off exponentially from this, with jitter...
const RETRY_BACKOFF_US_MIN: u64 = 500;
/// ...up to this.
const RETRY_BACKOFF_US_MAX: u64 = 5 * TICK_US;

/// What a client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read(Key),
    Write(Key, Value),
    Cas(Key, Option<Value>, Value),
    Delete(Key),
}

impl OpKind {
    fn key(self) -> Key {
        match self {
            OpKind::Read(k) | OpKind::Write(k, _) | OpKind::Cas(k, _, _) | OpKind::Delete(k) => k,
        }
    }

    fn input(self) -> KvInput {
        match self {
            OpKind::Read(key) => KvInput::Read { key },
            OpKind::Write(key, value) => KvInput::Write { key, value },
            OpKind::Cas(key, expected, new) => KvInput::Cas { key, expected, new },
            OpKind::Delete(key) => KvInput::Delete { key },
        }
    }

    fn request(self, id: RequestId) -> ClientRequest {
        let command = match self {
            OpKind::Read(key) => return ClientRequest::Read(id, key_bytes(key)),
            OpKind::Write(key, value) => Request::Put(PutRequest {
                key: key_bytes(key),
                value: value_bytes(value),
                prev_kv: false,
                ..Default::default()
            }),
            OpKind::Cas(key, expected, new) => Request::Txn(TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::key(key_bytes(key)),
                    target: match expected {
                        Some(v) => CompareTarget::Value(value_bytes(v)),
                        None => CompareTarget::Version(0),
                    },
                    op: CompareOp::Equal,
                }],
                success: vec![Request::Put(PutRequest {
                    key: key_bytes(key),
                    value: value_bytes(new),
                    prev_kv: false,
                    ..Default::default()
                })],
                failure: vec![],
            }),
            OpKind::Delete(key) => Request::DeleteRange(DeleteRangeRequest {
                range: KeyRange::key(key_bytes(key)),
                prev_kv: false,
            }),
        };
        ClientRequest::Write(id, command)
    }

    /// What the service's answer means for this operation, or why it makes no sense.
    fn output(self, applied: &Applied) -> Result<KvOutput, String> {
        match (self, &applied.response) {
            // A value that is not one the workload wrote is reported as an impossible value,
            // which the checker will flag.
            (OpKind::Read(_), Response::Range(r)) => Ok(KvOutput::Read(
                r.kvs
                    .first()
                    .map(|kv| decode_value(&kv.value).unwrap_or(Value::MAX)),
            )),
            (OpKind::Write(..), Response::Put(_)) => Ok(KvOutput::Written),
            (OpKind::Cas(..), Response::Txn(t)) => Ok(KvOutput::Cas(t.succeeded)),
            (OpKind::Delete(_), Response::DeleteRange(_)) => Ok(KvOutput::Deleted),
            (op, response) => Err(format!("{op:?} answered with {response:?}")),
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpKind::Read(k) => write!(f, "read k{k}"),
            OpKind::Write(k, v) => write!(f, "write k{k} := {v}"),
            OpKind::Cas(k, Some(e), v) => write!(f, "cas k{k} {e} -> {v}"),
            OpKind::Cas(k, None, v) => write!(f, "cas k{k} absent -> {v}"),
            OpKind::Delete(k) => write!(f, "delete k{k}"),
        }
    }
}

fn key_bytes(key: Key) -> Bytes {
    Bytes::from(format!("k{key}"))
}

/// A value's padding: a quarter of the values carry 100 to 600 bytes more, so that log
/// writes cross disk sectors and snapshots take many chunks, as they do with real values.
fn padding(value: Value) -> impl Iterator<Item = u8> {
    let mixed = value.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    let len = if mixed.is_multiple_of(4) {
        100 + mixed % 500
    } else {
        0
    };
    (0..len).map(move |i| (i as u8) ^ 0xa5)
}

fn value_bytes(value: Value) -> Bytes {
    let mut bytes = value.to_be_bytes().to_vec();
    bytes.extend(padding(value));
    Bytes::from(bytes)
}

/// The value these bytes encode, if they are exactly what the workload wrote for it.
fn decode_value(bytes: &[u8]) -> Option<Value> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    let value = Value::from_be_bytes(*head);
    padding(value).eq(rest.iter().copied()).then_some(value)
}

/// The operation a client is running.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    kind: OpKind,
    op: OpId,
    request: RequestId,
    invoked_at: u64,
    /// Attempts sent so far; the newest is the one whose timeout counts.
    attempts: u32,
    /// Refusals so far; each doubles the wait before the next attempt.
    refusals: u32,
    /// Attempts whose fate is unknown: (attempt, node). A write with any left may have
    /// taken effect.
    unresolved: Vec<(u32, NodeId)>,
}

/// One client.
pub(crate) struct Client {
    pub(crate) id: u64,
    seq: u64,
    leader_guess: NodeId,
    /// The last value this client saw per key; compare-and-swaps expect it.
    known: BTreeMap<Key, Option<Value>>,
    pub(crate) pending: Option<Pending>,
    rng: Rng,
    pub(crate) active: bool,
}

impl Client {
    pub(crate) fn new(id: u64, first_guess: NodeId, rng: Rng) -> Client {
        Client {
            id,
            seq: 0,
            leader_guess: first_guess,
            known: BTreeMap::new(),
            pending: None,
            rng,
            active: true,
        }
    }

    /// A random operation: 40% reads, 35% writes, 20% compare-and-swaps, 5% deletes.
    fn next_op(&mut self, keys: u64) -> OpKind {
        let key = self.rng.range(0, keys);
        // Values are unique across the run and say who wrote them: client 3's request 17
        // writes 3000017.
        let value = self.id * 1_000_000 + self.seq;
        match self.rng.range(0, 20) {
            0..=7 => OpKind::Read(key),
            8..=14 => OpKind::Write(key, value),
            15..=18 => OpKind::Cas(key, self.known.get(&key).copied().flatten(), value),
            _ => OpKind::Delete(key),
        }
    }
}

impl<P: Protocol> World<P> {
    /// Adds `count` clients, each starting its first operation within a tick.
    pub(crate) fn add_clients(&mut self, count: usize) {
        let mut rng = Rng::new(self.config.seed ^ 0x00c1_1e47);
        for _ in 0..count {
            let id = self.clients.len() as u64 + 1;
            let guess = if self.config.spread_clients {
                self.voters[(id as usize - 1) % self.voters.len()]
            } else {
                self.voters[rng.index(self.voters.len())]
            };
            self.clients.push(Client::new(id, guess, rng.fork()));
            let start = rng.range(1, TICK_US);
            self.schedule(start, Event::ClientNext { client: id });
        }
    }

    fn client(&mut self, id: u64) -> &mut Client {
        &mut self.clients[id as usize - 1]
    }

    pub(crate) fn start_next_op(&mut self, id: u64) {
        let keys = self.config.keys;
        let now = self.now;
        let client = self.client(id);
        if !client.active || client.pending.is_some() {
            return;
        }
        client.seq += 1;
        let kind = client.next_op(keys);
        let request = RequestId::new(id, client.seq);
        let op = self.history.invoke(id, kind.input(), now);
        self.stats.operations += 1;
        self.client(id).pending = Some(Pending {
            kind,
            op,
            request,
            invoked_at: now,
            attempts: 0,
            refusals: 0,
            unresolved: Vec::new(),
        });
        self.trace_line(|| format!("c{id} invokes {kind} as {request}"));
        self.send_attempt(id, request.seq);
    }

    /// Sends the pending operation to the node the client believes leads, or abandons it
    /// once its deadline has passed.
    pub(crate) fn send_attempt(&mut self, id: u64, seq: u64) {
        let now = self.now;
        let client = self.client(id);
        let target = client.leader_guess;
        let Some(pending) = client.pending.as_mut().filter(|p| p.request.seq == seq) else {
            return;
        };
        if now >= pending.invoked_at + GIVE_UP_AFTER_US {
            return self.give_up(id);
        }
        pending.attempts += 1;
        let attempt = pending.attempts;
        pending.unresolved.push((attempt, target));
        let request = pending.kind.request(pending.request);
        let deliveries = self.network.deliveries(&mut self.net_rng);
        for delay in deliveries.iter() {
            let request = request.clone();
            self.schedule(
                delay,
                Event::ToNode {
                    node: target,
                    client: id,
                    request,
                },
            );
        }
        self.schedule(
            ATTEMPT_TIMEOUT_US,
            Event::ClientTimeout {
                client: id,
                seq,
                attempt,
            },
        );
    }

    pub(crate) fn on_reply(&mut self, id: u64, from: NodeId, request: RequestId, reply: Reply) {
        let Some(pending) = self.client(id).pending.clone() else {
            return;
        };
        if pending.request != request {
            return;
        }
        match reply {
            Reply::Done(Ok(applied)) => match pending.kind.output(&applied) {
                Ok(output) => self.finish(id, pending, output),
                Err(e) => self.fail(crate::report::ViolationKind::Safety, format!("c{id}: {e}")),
            },
            Reply::Done(Err(e)) => {
                let detail = format!("c{id}: {request} failed in the state machine: {e}");
                self.fail(crate::report::ViolationKind::Safety, detail);
            }
            Reply::Redirect(hint) => self.redirect(id, from, hint),
        }
    }

    fn finish(&mut self, id: u64, pending: Pending, output: KvOutput) {
        let now = self.now;
        self.history.ok(pending.op, output.clone(), now);
        self.trace_line(|| format!("c{id} {} -> {output:?}", pending.request));
        let is_write = !matches!(pending.kind, OpKind::Read(_));
        if is_write {
            self.stats.write_latencies_us.push(now - pending.invoked_at);
        }
        if is_write && self.recovered_at().is_none() {
            if let Some(healed) = self.healed_at.filter(|&h| pending.invoked_at >= h) {
                self.stats.recovery_us = Some(now - healed);
            }
        }
        let client = self.client(id);
        let key = pending.kind.key();
        match (pending.kind, output) {
            (_, KvOutput::Read(v)) => {
                client.known.insert(key, v);
            }
            (OpKind::Write(_, v), _) | (OpKind::Cas(_, _, v), KvOutput::Cas(true)) => {
                client.known.insert(key, Some(v));
            }
            (OpKind::Delete(_), _) => {
                client.known.insert(key, None);
            }
            _ => {}
        }
        self.stats.completed += 1;
        self.next_after_think(id);
    }

    pub(crate) fn recovered_at(&self) -> Option<u64> {
        self.stats.recovery_us
    }

    /// A node refused the request as not the leader: try the node it names (or a random
    /// one) after a backoff that doubles with every refusal, as etcd's client does.
    fn redirect(&mut self, id: u64, from: NodeId, hint: Option<NodeId>) {
        let nodes = self.voters.clone();
        let client = self.client(id);
        let Some(pending) = client.pending.as_mut() else {
            return;
        };
        // A refusal settles the attempt sent to that node, if only one went there.
        if pending
            .unresolved
            .iter()
            .filter(|(_, n)| *n == from)
            .count()
            == 1
        {
            pending.unresolved.retain(|(_, n)| *n != from);
        }
        pending.refusals += 1;
        let backoff = (RETRY_BACKOFF_US_MIN << pending.refusals.min(16)).min(RETRY_BACKOFF_US_MAX);
        let seq = pending.request.seq;
        client.leader_guess = match hint {
            Some(leader) if leader != from => leader,
            _ => nodes[client.rng.index(nodes.len())],
        };
        let delay = backoff / 2 + client.rng.range_inclusive(0, backoff / 2);
        let guess = client.leader_guess;
        self.trace_line(|| format!("c{id} refused by {from}, retries at {guess}"));
        self.schedule(delay, Event::ClientSend { client: id, seq });
    }

    pub(crate) fn on_client_timeout(&mut self, id: u64, seq: u64, attempt: u32) {
        let now = self.now;
        let nodes = self.voters.clone();
        let client = self.client(id);
        let Some(pending) = client
            .pending
            .as_ref()
            .filter(|p| p.request.seq == seq && p.attempts == attempt)
        else {
            return;
        };
        if now >= pending.invoked_at + GIVE_UP_AFTER_US {
            return self.give_up(id);
        }
        let current = client.leader_guess;
        let others: Vec<NodeId> = nodes.into_iter().filter(|&n| n != current).collect();
        client.leader_guess = others
            .get(client.rng.index(others.len().max(1)))
            .copied()
            .unwrap_or(current);
        self.send_attempt(id, seq);
    }

    fn give_up(&mut self, id: u64) {
        let now = self.now;
        let Some(pending) = self.client(id).pending.clone() else {
            return;
        };
        let may_have_run =
            !matches!(pending.kind, OpKind::Read(_)) && !pending.unresolved.is_empty();
        if may_have_run {
            self.history.indeterminate(pending.op, now);
            self.stats.indeterminate += 1;
            // The client no longer knows the key's value.
            self.client(id).known.remove(&pending.kind.key());
        } else {
            self.history.fail(pending.op, now);
            self.stats.failed += 1;
        }
        self.trace_line(|| format!("c{id} gives up on {}", pending.request));
        self.next_after_think(id);
    }

    fn next_after_think(&mut self, id: u64) {
        let client = self.client(id);
        client.pending = None;
        let think = client.rng.range(1, 3 * TICK_US);
        self.schedule(think, Event::ClientNext { client: id });
    }
}
