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
    Applied, Compare, CompareOp, CompareTarget, DeleteRangeRequest, KeyRange, KvError,
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, Request, Response, TxnRequest,
};

use crate::protocol::Protocol;
use crate::world::{ClientRequest, Event, Reply, World};
use crate::{SimTime, TICK_US};

/// An attempt unanswered for this long is retried at another node.
const ATTEMPT_TIMEOUT_US: u64 = 30 * TICK_US;
/// An operation unanswered for this long is abandoned.
const GIVE_UP_AFTER_US: u64 = 200 * TICK_US;
/// Retries after a refusal back off exponentially from this, with jitter...
const RETRY_BACKOFF_US_MIN: u64 = 500;
/// ...up to this.
const RETRY_BACKOFF_US_MAX: u64 = 5 * TICK_US;

/// What a client asks. Lease operations stand outside the register history the
/// linearizability checker reads (expiry deletes keys no client asked to delete); the lease
/// checker (`lease.rs`) reads what they were promised instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read(Key),
    Write(Key, Value),
    Cas(Key, Option<Value>, Value),
    Delete(Key),
    /// Grant a lease with this id and TTL (seconds).
    Grant(i64, i64),
    /// Write the client's key under its lease.
    Attach(i64),
    /// Renew the lease.
    KeepAlive(i64),
    /// Revoke the lease, deleting its key.
    Revoke(i64),
}

impl OpKind {
    /// The register this operation reads or writes, if it is one the history covers.
    fn key(self) -> Option<Key> {
        match self {
            OpKind::Read(k) | OpKind::Write(k, _) | OpKind::Cas(k, _, _) | OpKind::Delete(k) => {
                Some(k)
            }
            OpKind::Grant(..) | OpKind::Attach(_) | OpKind::KeepAlive(_) | OpKind::Revoke(_) => {
                None
            }
        }
    }

    fn input(self) -> Option<KvInput> {
        Some(match self {
            OpKind::Read(key) => KvInput::Read { key },
            OpKind::Write(key, value) => KvInput::Write { key, value },
            OpKind::Cas(key, expected, new) => KvInput::Cas { key, expected, new },
            OpKind::Delete(key) => KvInput::Delete { key },
            OpKind::Grant(..) | OpKind::Attach(_) | OpKind::KeepAlive(_) | OpKind::Revoke(_) => {
                return None
            }
        })
    }

    fn request(self, id: RequestId) -> ClientRequest {
        let command = match self {
            OpKind::Read(key) => return ClientRequest::Read(id, key_bytes(key)),
            OpKind::KeepAlive(lease) => return ClientRequest::KeepAlive(id, lease),
            // The server proposes grants as they are (the lease id is its own choice).
            OpKind::Grant(lease, ttl) => {
                let grant = Request::LeaseGrant(LeaseGrantRequest { id: lease, ttl });
                return ClientRequest::Write(id, grant);
            }
            OpKind::Attach(lease) => Request::Put(PutRequest {
                key: lease_key(lease),
                value: Bytes::from_static(b"held"),
                lease,
                ..Default::default()
            }),
            OpKind::Revoke(lease) => Request::LeaseRevoke(LeaseRevokeRequest { id: lease }),
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
        // As the server sends a client's write: with its user, none while auth is off.
        let command = Request::As {
            user: None,
            since: None,
            request: Box::new(command),
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
            (OpKind::Grant(..) | OpKind::Attach(_) | OpKind::Revoke(_), _) => Ok(KvOutput::Written),
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
            OpKind::Grant(l, ttl) => write!(f, "grant lease {l} for {ttl} s"),
            OpKind::Attach(l) => write!(f, "attach a key to lease {l}"),
            OpKind::KeepAlive(l) => write!(f, "keep lease {l} alive"),
            OpKind::Revoke(l) => write!(f, "revoke lease {l}"),
        }
    }
}

fn key_bytes(key: Key) -> Bytes {
    Bytes::from(format!("k{key}"))
}

/// The key a lease holder keeps under its lease.
fn lease_key(lease: i64) -> Bytes {
    Bytes::from(format!("lease/{lease}"))
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
    /// Its place in the register history (lease operations have none).
    op: Option<OpId>,
    request: RequestId,
    invoked_at: u64,
    /// An attempt unanswered for this long is retried at another node.
    attempt_timeout_us: u64,
    /// Unanswered by then, the operation is abandoned.
    give_up_at: u64,
    /// Attempts sent so far; the newest is the one whose timeout counts.
    attempts: u32,
    /// Refusals so far; each doubles the wait before the next attempt.
    refusals: u32,
    /// Attempts whose fate is unknown: (attempt, node). A write with any left may have
    /// taken effect.
    unresolved: Vec<(u32, NodeId)>,
}

impl Pending {
    /// A new operation. A keep-alive goes as etcd's client sends it, on one stream to one
    /// member: not retried elsewhere unless that member refuses it, and given up (the lease
    /// taken for lost) once `ttl` seconds pass without an answer.
    fn new(kind: OpKind, op: Option<OpId>, request: RequestId, now: u64, ttl: i64) -> Pending {
        let (attempt_timeout_us, give_up_after) = match kind {
            OpKind::KeepAlive(_) => {
                let ttl_us = ttl.max(1) as u64 * 1_000_000;
                (ttl_us, ttl_us)
            }
            _ => (ATTEMPT_TIMEOUT_US, GIVE_UP_AFTER_US),
        };
        Pending {
            kind,
            op,
            request,
            invoked_at: now,
            attempt_timeout_us,
            give_up_at: now + give_up_after,
            attempts: 0,
            refusals: 0,
            unresolved: Vec::new(),
        }
    }
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
    /// The lease it holds, if any.
    held: Option<HeldLease>,
    /// Leases granted to this client so far, for fresh ids.
    granted: i64,
    /// The id of the lease it revoked last, asked for again by its next grant (etcd's
    /// clients may choose their lease ids): the grant may apply just after the revoke.
    regrant: Option<i64>,
    /// A lease it stopped renewing and revokes at this time (`RunConfig::late_revokes`).
    revoke_at: Option<(i64, u64)>,
    /// Its next operation grants `regrant` again (after a late revoke).
    regrant_at_once: bool,
    /// Answers it may reuse (under a protocol whose clients cache, as DNS resolvers do).
    cache: BTreeMap<Key, CachedRead>,
}

/// A read's answer a client keeps until its TTL runs out.
#[derive(Clone, Copy, Debug)]
struct CachedRead {
    value: Option<Value>,
    /// The applied index it was read at.
    index: u64,
    expires_at: u64,
}

/// A lease a client holds.
#[derive(Clone, Copy, Debug)]
struct HeldLease {
    id: i64,
    ttl: i64,
    /// Its key is written under it.
    attached: bool,
    /// When the next keep-alive is due.
    renew_at: u64,
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
            held: None,
            granted: 0,
            regrant: None,
            revoke_at: None,
            regrant_at_once: false,
            cache: BTreeMap::new(),
        }
    }

    /// The next operation. A lease holder keeps its lease alive every third of its TTL, as
    /// etcd's client does, and writes its key under it once; a client without one takes one
    /// now and then. Otherwise a random register operation: 40% reads, 35% writes, 20%
    /// compare-and-swaps, 5% deletes.
    fn next_op(&mut self, keys: u64, now: u64, consensus: bool) -> OpKind {
        if !consensus {
            // No leases, and a write in place of a compare-and-swap.
            return match self.register_op(keys) {
                OpKind::Cas(key, _, value) => OpKind::Write(key, value),
                op => op,
            };
        }
        if let Some((lease, _)) = self.revoke_at.filter(|&(_, at)| now >= at) {
            self.revoke_at = None;
            self.regrant = Some(lease);
            self.regrant_at_once = true;
            return OpKind::Revoke(lease);
        }
        if let Some(held) = self.held {
            if now >= held.renew_at {
                return OpKind::KeepAlive(held.id);
            }
            if !held.attached {
                return OpKind::Attach(held.id);
            }
        } else if std::mem::take(&mut self.regrant_at_once) || self.rng.range(0, 10) == 0 {
            let lease = self.regrant.take().unwrap_or_else(|| {
                self.granted += 1;
                self.id as i64 * 1_000_000 + self.granted
            });
            return OpKind::Grant(lease, self.rng.range_inclusive(1, 3) as i64);
        }
        self.register_op(keys)
    }

    /// Done with a lease, its last keep-alive answered `now`: mostly it is left to lapse (its
    /// holder stops renewing it and forgets it), sometimes revoked. With `late_revokes`, half
    /// of the lapsing ones are revoked about when their TTL runs out.
    fn drop_lease(&mut self, now: u64, late_revokes: bool) -> Option<OpKind> {
        let held = self.held.take()?;
        let revoke = self.rng.range(0, 3) == 0;
        if revoke {
            self.regrant = Some(held.id);
        } else if late_revokes && self.rng.range(0, 2) == 0 {
            let ttl_us = held.ttl.max(1) as u64 * 1_000_000;
            let at = now + ttl_us * 9 / 10 + self.rng.range(0, ttl_us * 3 / 10);
            self.revoke_at = Some((held.id, at));
        }
        revoke.then_some(OpKind::Revoke(held.id))
    }

    fn register_op(&mut self, keys: u64) -> OpKind {
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

    /// The nodes client `id` can reach: every node, unless a partition cut it off from some.
    fn reachable(&self, id: u64) -> Vec<NodeId> {
        self.client_reach
            .get(&id)
            .filter(|nodes| !nodes.is_empty())
            .cloned()
            .unwrap_or_else(|| self.everyone.clone())
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
        let kind = client.next_op(keys, now, P::TAKES_CONSENSUS_OPS);
        let request = RequestId::new(id, client.seq);
        let op = kind
            .input()
            .map(|input| self.history.invoke(id, input, now));
        self.stats.operations += 1;
        let ttl = self.client(id).held.map_or(0, |h| h.ttl);
        self.client(id).pending = Some(Pending::new(kind, op, request, now, ttl));
        self.trace_line(|| format!("c{id} invokes {kind} as {request}"));
        if let OpKind::Read(key) = kind {
            let cached = self.client(id).cache.get(&key).copied();
            if let Some(hit) = cached.filter(|c| now < c.expires_at) {
                self.stats.reads_from_cache += 1;
                return self.read_answered(id, key, hit.value, hit.index);
            }
        }
        self.send_attempt(id, request.seq);
    }

    /// Sends the pending operation to the node the client believes leads (a read, under a
    /// protocol that does not promise linearizability, to any node), or abandons it once its
    /// deadline has passed.
    pub(crate) fn send_attempt(&mut self, id: u64, seq: u64) {
        let now = self.now;
        let reads_anywhere = !synod_replica::is_linearizable(P::NAME);
        let nodes = self.reachable(id);
        let client = self.client(id);
        let is_read = client
            .pending
            .as_ref()
            .is_some_and(|p| matches!(p.kind, OpKind::Read(_)));
        if (reads_anywhere && is_read) || !nodes.contains(&client.leader_guess) {
            client.leader_guess = nodes[client.rng.index(nodes.len())];
        }
        let target = client.leader_guess;
        let Some(pending) = client.pending.as_mut().filter(|p| p.request.seq == seq) else {
            return;
        };
        if now >= pending.give_up_at {
            return self.give_up(id);
        }
        pending.attempts += 1;
        let timeout = pending.attempt_timeout_us;
        let attempt = pending.attempts;
        let request = pending.kind.request(pending.request);
        let op = pending.op;
        if let (Some(timeline), Some(op)) = (&mut self.timeline, op) {
            timeline.invoke(now, op.0, id, target);
        }
        let deliveries = self.network.deliveries(&mut self.net_rng);
        // One unresolved entry per copy that will arrive: a refusal settles one copy, and a
        // duplicate may have reached the log before its twin was refused.
        if let Some(pending) = self.client(id).pending.as_mut() {
            for _ in deliveries.iter() {
                pending.unresolved.push((attempt, target));
            }
        }
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
            timeout,
            Event::ClientTimeout {
                client: id,
                seq,
                attempt,
            },
        );
    }

    pub(crate) fn on_reply(
        &mut self,
        id: u64,
        from: NodeId,
        request: RequestId,
        reply: Reply,
        sent_at: SimTime,
    ) {
        let Some(pending) = self.client(id).pending.clone() else {
            return;
        };
        if pending.request != request {
            return;
        }
        match (reply, pending.kind) {
            (Reply::Ttl(ttl), OpKind::KeepAlive(lease)) => {
                self.on_keep_alive(id, pending, lease, ttl, sent_at)
            }
            (Reply::Done(result), OpKind::Grant(..) | OpKind::Attach(_) | OpKind::Revoke(_)) => {
                self.on_lease_write(id, pending, result)
            }
            (Reply::Read(index, Ok(applied)), OpKind::Read(key)) => match pending
                .kind
                .output(&applied)
            {
                Ok(KvOutput::Read(value)) => {
                    if P::CLIENT_CACHE_TTL_US > 0 {
                        let expires_at = self.now + P::CLIENT_CACHE_TTL_US;
                        let cached = CachedRead {
                            value,
                            index,
                            expires_at,
                        };
                        self.client(id).cache.insert(key, cached);
                    }
                    self.read_answered(id, key, value, index)
                }
                Ok(other) => {
                    let detail = format!("c{id}: a read answered with {other:?}");
                    self.fail(crate::report::ViolationKind::Safety, detail)
                }
                Err(e) => self.fail(crate::report::ViolationKind::Safety, format!("c{id}: {e}")),
            },
            (Reply::Done(Ok(applied)) | Reply::Read(_, Ok(applied)), kind) => match kind
                .output(&applied)
            {
                Ok(output) => self.finish(id, pending, output),
                Err(e) => self.fail(crate::report::ViolationKind::Safety, format!("c{id}: {e}")),
            },
            (Reply::Done(Err(e)) | Reply::Read(_, Err(e)), _) => {
                let detail = format!("c{id}: {request} failed in the state machine: {e}");
                self.fail(crate::report::ViolationKind::Safety, detail);
            }
            (Reply::Redirect(hint), _) => self.redirect(id, from, hint),
            (Reply::Ttl(_), kind) => {
                let detail = format!("c{id}: {kind} answered with a TTL");
                self.fail(crate::report::ViolationKind::Safety, detail);
            }
        }
    }

    /// A keep-alive's answer, sent by its node at `sent_at`: a TTL renews the holder's promise
    /// (the holder counts from now, when the answer arrived, as etcd's client does; the
    /// checker from when it was sent, see `lease.rs`); 0 means the lease is gone.
    fn on_keep_alive(&mut self, id: u64, pending: Pending, lease: i64, ttl: i64, sent_at: SimTime) {
        let now = self.now;
        self.stats.completed += 1;
        self.trace_line(|| format!("c{id} {} -> TTL {ttl}", pending.request));
        let client = self.client(id);
        match client.held.filter(|h| h.id == lease) {
            Some(_) if ttl > 0 => {
                // Every third of the TTL; but now and then the holder stalls (a long GC
                // pause, an overloaded host) and comes back about when the lease runs out.
                let ttl_us = ttl as u64 * 1_000_000;
                let stall = self.clients[id as usize - 1].rng.range(0, 10) == 0;
                let client = &mut self.clients[id as usize - 1];
                let wait = if stall {
                    ttl_us * 8 / 10 + client.rng.range(0, ttl_us / 2)
                } else {
                    ttl_us / 3
                };
                let Some(held) = client.held.as_mut() else {
                    return;
                };
                held.renew_at = now + wait;
                self.promise(lease, sent_at, ttl);
                self.stats.lease_renewals += 1;
                if self.client(id).rng.range(0, 8) == 0 {
                    // Done with it: the next operation revokes it, or nothing does.
                    return self.done_with_lease(id);
                }
            }
            Some(_) => {
                self.client(id).held = None;
            }
            None => {}
        }
        self.next_after_think(id);
    }

    fn done_with_lease(&mut self, id: u64) {
        let (now, late_revokes) = (self.now, self.config.late_revokes);
        let revoke = self.client(id).drop_lease(now, late_revokes);
        self.trace_line(|| format!("c{id} is done with its lease"));
        match revoke {
            Some(kind) => self.invoke_lease_op(id, kind),
            None => self.next_after_think(id),
        }
    }

    /// Starts a lease operation at once (outside the think time).
    fn invoke_lease_op(&mut self, id: u64, kind: OpKind) {
        let now = self.now;
        let client = self.client(id);
        client.seq += 1;
        let request = RequestId::new(id, client.seq);
        client.pending = Some(Pending::new(kind, None, request, now, 0));
        self.stats.operations += 1;
        self.trace_line(|| format!("c{id} invokes {kind} as {request}"));
        self.send_attempt(id, request.seq);
    }

    /// A grant, attach or revoke applied (or failed in the store: the lease had gone).
    fn on_lease_write(&mut self, id: u64, pending: Pending, result: Result<Applied, KvError>) {
        self.stats.completed += 1;
        let client = self.client(id);
        match (pending.kind, result) {
            (OpKind::Grant(lease, ttl), Ok(_)) => {
                client.held = Some(HeldLease {
                    id: lease,
                    ttl,
                    attached: false,
                    renew_at: pending.invoked_at + ttl as u64 * 1_000_000 / 3,
                });
                // The grant's clock starts on the leader after the client asked for it.
                self.promise(lease, pending.invoked_at, ttl);
                self.stats.leases_granted += 1;
            }
            (OpKind::Attach(lease), Ok(_)) => {
                if let Some(held) = client.held.as_mut().filter(|h| h.id == lease) {
                    held.attached = true;
                }
            }
            (OpKind::Attach(lease) | OpKind::Grant(lease, _), Err(_)) => {
                if client.held.is_some_and(|h| h.id == lease) {
                    client.held = None;
                }
            }
            (OpKind::Revoke(_), _) => {}
            (kind, result) => {
                let detail = format!("c{id}: {kind} answered with {result:?}");
                return self.fail(crate::report::ViolationKind::Safety, detail);
            }
        }
        self.trace_line(|| format!("c{id} {} done", pending.request));
        self.next_after_think(id);
    }

    /// The pending read of `key` answered `value`, as of applied index `index` (by a node, or
    /// from the client's cache): how stale it was, and whether the protocol allows that.
    fn read_answered(&mut self, id: u64, key: Key, value: Option<Value>, index: u64) {
        let Some(pending) = self.client(id).pending.clone() else {
            return;
        };
        self.stats.reads += 1;
        if let Some((stale, behind)) = self.freshness.staleness(key, index, pending.invoked_at) {
            self.stats.stale_reads += 1;
            self.stats.read_staleness_us.push(stale);
            self.stats.read_versions_behind.push(behind);
            let bound = P::STALENESS_BOUND_US.unwrap_or(0);
            if self.fault_free && stale > bound {
                let detail = format!(
                    "c{id}: {} read k{key} as of index {index}, {stale} us stale (at most {bound} us \
                     without faults)",
                    pending.request
                );
                return self.fail(crate::report::ViolationKind::Staleness, detail);
            }
        }
        self.finish(id, pending, KvOutput::Read(value));
    }

    fn finish(&mut self, id: u64, pending: Pending, output: KvOutput) {
        let now = self.now;
        if let Some(op) = pending.op {
            self.history.ok(op, output.clone(), now);
        }
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
        let Some(key) = pending.kind.key() else {
            return self.next_after_think(id);
        };
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
        let nodes = self.reachable(id);
        let client = self.client(id);
        let Some(pending) = client.pending.as_mut() else {
            return;
        };
        // A refusal settles the copy sent to that node, if only one went there (answers can
        // arrive twice too, so two refusals do not settle two copies).
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
            Some(leader) if leader != from && nodes.contains(&leader) => leader,
            _ => nodes[client.rng.index(nodes.len())],
        };
        let delay = backoff / 2 + client.rng.range_inclusive(0, backoff / 2);
        let guess = client.leader_guess;
        self.trace_line(|| format!("c{id} refused by {from}, retries at {guess}"));
        self.schedule(delay, Event::ClientSend { client: id, seq });
    }

    pub(crate) fn on_client_timeout(&mut self, id: u64, seq: u64, attempt: u32) {
        let now = self.now;
        let nodes = self.reachable(id);
        let client = self.client(id);
        let Some(pending) = client
            .pending
            .as_ref()
            .filter(|p| p.request.seq == seq && p.attempts == attempt)
        else {
            return;
        };
        if now >= pending.give_up_at {
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
        let may_have_run = !matches!(pending.kind, OpKind::Read(_) | OpKind::KeepAlive(_))
            && !pending.unresolved.is_empty();
        match (pending.op, pending.kind.key()) {
            (Some(op), Some(key)) if may_have_run => {
                self.history.indeterminate(op, now);
                self.stats.indeterminate += 1;
                // The client no longer knows the key's value.
                self.client(id).known.remove(&key);
            }
            (Some(op), _) => {
                self.history.fail(op, now);
                self.stats.failed += 1;
            }
            // A grant that may have applied: the client does not know it holds the lease,
            // which then lapses. Its promise starts only if it hears so. A keep-alive
            // unanswered for a TTL: the holder takes its lease for lost.
            (None, _) => {
                if may_have_run {
                    self.stats.indeterminate += 1;
                } else {
                    self.stats.failed += 1;
                }
                if let OpKind::KeepAlive(lease) = pending.kind {
                    let client = self.client(id);
                    if client.held.is_some_and(|h| h.id == lease) {
                        client.held = None;
                    }
                }
            }
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
