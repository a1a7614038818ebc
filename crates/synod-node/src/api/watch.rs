//! The Watch service: a stream of watch creations and cancellations in, events out.
//!
//! Every stream is a task that reads the store's history. When the node applies entries it
//! publishes the new revision; the task then sends each of its watchers the changes since the
//! revision that watcher has seen, in revision order, every event of one revision in one
//! response. A watcher never misses or repeats an event: what it has seen is a revision
//! number, and the history holds every change after it until it is compacted. A watcher that
//! falls behind past the history window (a slow client, a start revision too old) is
//! cancelled with the compaction revision, as etcd does, and the client restarts from there.
//!
//! A progress notification (asked for, or sent every `watch_progress_interval` to idle
//! watchers that want it) comes only after the stream has caught up: every event at or below
//! the revision it names has been sent before it, as etcd 3.5.8 and later promise (Kubernetes'
//! apiserver serves consistent reads from its cache on that promise). Watch ids are never
//! reused on a stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use synod_kv::{EventKind, KeyRange, KvError};
use synod_proto::etcdserverpb as pb;
use synod_proto::mvccpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::leadership::{stream_guard, StreamGuard};
use super::{convert, Api};

/// Events per response at most, unless one revision holds more.
const EVENTS_PER_RESPONSE: usize = 1000;

/// Changes one pass of `catch_up` reads, for all a stream's watchers together, while it holds
/// the store (and, with one thread, the whole server): a watch from far back in a long
/// history is caught up in passes, one per turn of the stream's loop, between which the node
/// loop, every other connection and this stream's own requests take their turn, instead of
/// in one stall that could outlast an election timeout.
const CATCH_UP_EVENTS: usize = 10_000;

/// The Watch service.
#[derive(Debug)]
pub struct WatchService(pub Arc<Api>);

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let leader = stream_guard(&self.0, &request);
        let user = self.0.caller(&request)?;
        let responses = start(self.0.clone(), request.into_inner(), leader, user);
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}

/// Starts a watch stream's session: `inbound` is what the client asks (creations,
/// cancellations, progress requests), the receiver what it is sent. The session ends when
/// `inbound` ends or fails, or the receiver is dropped.
pub(crate) fn start(
    api: Arc<Api>,
    inbound: impl Stream<Item = Result<pb::WatchRequest, Status>> + Send + Unpin + 'static,
    leader: StreamGuard,
    user: Option<String>,
) -> mpsc::Receiver<Result<pb::WatchResponse, Status>> {
    let (out, responses) = mpsc::channel(64);
    let session = Session {
        api,
        user,
        out,
        watchers: BTreeMap::new(),
        next_id: 0,
        behind: false,
        progress_asked: false,
    };
    tokio::spawn(session.run(inbound, leader));
    responses
}

struct Watcher {
    range: KeyRange,
    /// The first revision this watcher has not been sent.
    next: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    /// Something was sent since the last progress notification.
    active: bool,
}

impl Watcher {
    fn wants(&self, event: &synod_kv::Event) -> bool {
        let filtered = match event.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && self.range.contains(&event.kv.key)
    }
}

/// The client went away.
struct Gone;

struct Session {
    api: Arc<Api>,
    /// Who opened the stream, while auth is on: each watch it creates needs read access to
    /// its keys.
    user: Option<String>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    /// The next id to hand out: it only grows, so no id is used twice on a stream.
    next_id: i64,
    /// Some watcher has not been sent everything up to the revision of the last pass.
    behind: bool,
    /// A progress request waits for every watcher to catch up.
    progress_asked: bool,
}

/// etcd's answers to a watch it could not create.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const PERMISSION_DENIED: &str = "etcdserver: permission denied";

impl Session {
    async fn run(
        mut self,
        mut inbound: impl Stream<Item = Result<pb::WatchRequest, Status>> + Unpin,
        mut leader: StreamGuard,
    ) {
        let mut revisions = self.api.node.revision.clone();
        let mut stop = self.api.stop.clone();
        let period = self.api.config.watch_progress_interval;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let outcome = tokio::select! {
                message = inbound.next() => match message {
                    Some(Ok(request)) => self.on_request(request).await,
                    None | Some(Err(_)) => Err(Gone),
                },
                changed = revisions.changed() => match changed {
                    Ok(()) => self.catch_up().await.map(|_| ()),
                    Err(_) => Err(Gone),
                },
                () = std::future::ready(()), if self.behind => self.catch_up().await.map(|_| ()),
                _ = progress.tick() => self.notify_progress().await,
                lost = leader.lost() => {
                    let _ = self.out.send(Err(lost)).await;
                    Err(Gone)
                }
                _ = stop.changed() => Err(Gone),
                _ = self.out.closed() => Err(Gone),
            };
            if outcome.is_err() {
                return;
            }
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }

    async fn on_request(&mut self, request: pb::WatchRequest) -> Result<(), Gone> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    let response = pb::WatchResponse {
                        header: Some(self.api.current_header()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    self.send(response).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Answered once every watcher has caught up (see `catch_up`).
                self.progress_asked = true;
                self.catch_up().await.map(|_| ())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, mut create: pb::WatchCreateRequest) -> Result<(), Gone> {
        let (current, compacted) = {
            let kv = self.api.node.shared.kv();
            (kv.revision(), kv.compacted_revision())
        };
        let header = self.api.header(current);
        let refuse = |reason: &str| pb::WatchResponse {
            header: Some(header),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.into(),
            ..Default::default()
        };
        if create.start_revision < 0 {
            return self.send(refuse(COMPACTED)).await;
        }
        // A range that ends at or before it starts ("\0" is "every key from here").
        let from_key = create.range_end.as_ref() == [0];
        if !create.range_end.is_empty() && !from_key && create.key >= create.range_end {
            return self.send(refuse(EMPTY_RANGE)).await;
        }
        let id = if create.watch_id == 0 {
            // etcd's auto ids (`clientv3.AutoWatchID` is 0): the lowest unused from where the
            // last one was taken, never one taken before.
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watchers.contains_key(&create.watch_id) {
            return self.send(refuse(DUPLICATE_ID)).await;
        } else {
            create.watch_id
        };
        if create.key.is_empty() {
            // etcd reads an empty key as the smallest key, so that an empty key with a range
            // end of "\0" watches every key.
            create.key = vec![0].into();
        }
        if let Some(user) = &self.user {
            let range = KeyRange {
                key: create.key.clone(),
                range_end: create.range_end.clone(),
            };
            let allowed =
                self.api
                    .node
                    .shared
                    .kv()
                    .auth()
                    .allows(user, synod_kv::auth::Access::Read, &range);
            if !allowed {
                return self.send(refuse(PERMISSION_DENIED)).await;
            }
        }
        let created = pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        self.send(created).await?;
        let start = if create.start_revision > 0 {
            create.start_revision
        } else {
            current + 1
        };
        if start < compacted {
            return self.cancel_compacted(id, compacted).await;
        }
        use pb::watch_create_request::FilterType;
        let filters = &create.filters;
        let watcher = Watcher {
            range: KeyRange {
                key: create.key,
                range_end: create.range_end,
            },
            next: start,
            no_put: filters.contains(&(FilterType::Noput as i32)),
            no_delete: filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            active: false,
        };
        self.watchers.insert(id, watcher);
        self.catch_up().await.map(|_| ())
    }

    async fn cancel_compacted(&mut self, id: i64, compacted: i64) -> Result<(), Gone> {
        self.watchers.remove(&id);
        let response = pb::WatchResponse {
            header: Some(self.api.current_header()),
            watch_id: id,
            canceled: true,
            compact_revision: compacted,
            cancel_reason: COMPACTED.into(),
            ..Default::default()
        };
        self.send(response).await
    }

    /// One pass of catching up (`catch_up_pass`); once every watcher has caught up, answers a
    /// progress request waiting for that. Returns the revision every watcher has now been
    /// sent everything up to, or `None` while some are behind: the stream's loop then runs
    /// another pass on its next turn.
    async fn catch_up(&mut self) -> Result<Option<i64>, Gone> {
        let reached = self.catch_up_pass().await?;
        if self.behind {
            return Ok(None);
        }
        if std::mem::take(&mut self.progress_asked) {
            // Not tied to one watcher: etcd answers with watch id -1.
            let response = pb::WatchResponse {
                header: Some(self.api.header(reached)),
                watch_id: -1,
                ..Default::default()
            };
            self.send(response).await?;
        }
        Ok(Some(reached))
    }

    /// Sends the watchers what they have not been sent, up to `CATCH_UP_EVENTS` changes read
    /// in all (never part of a revision); notes in `behind` whether some watcher is still
    /// behind. Returns the store's revision as of the pass.
    async fn catch_up_pass(&mut self) -> Result<i64, Gone> {
        let mut batches = Vec::new();
        let mut compacted = Vec::new();
        let mut behind = false;
        let mut read = 0;
        let current = {
            let kv = self.api.node.shared.kv();
            let current = kv.revision();
            for (&id, watcher) in self.watchers.iter_mut() {
                if watcher.next > current {
                    continue;
                }
                if read >= CATCH_UP_EVENTS {
                    behind = true;
                    continue;
                }
                match kv.events_from(watcher.next) {
                    Ok(events) => {
                        let mut events = events.peekable();
                        let mut last = None;
                        let mut wanted = Vec::new();
                        while let Some(event) =
                            events.next_if(|e| read < CATCH_UP_EVENTS || last == Some(e.revision()))
                        {
                            read += 1;
                            last = Some(event.revision());
                            if watcher.wants(event) {
                                wanted.push((
                                    event.revision(),
                                    convert::event(event, watcher.prev_kv),
                                ));
                            }
                        }
                        watcher.next = match (events.peek(), last) {
                            (Some(_), Some(last)) => {
                                behind = true;
                                last + 1
                            }
                            _ => current + 1,
                        };
                        if !wanted.is_empty() {
                            watcher.active = true;
                            batches.push((id, wanted));
                        }
                    }
                    Err(KvError::Compacted { compacted: at }) => compacted.push((id, at)),
                    Err(_) => {}
                }
            }
            current
        };
        for (id, at) in compacted {
            self.cancel_compacted(id, at).await?;
        }
        let header = self.api.header(current);
        for (id, events) in batches {
            for chunk in chunks(events) {
                let response = pb::WatchResponse {
                    header: Some(header),
                    watch_id: id,
                    events: chunk,
                    ..Default::default()
                };
                self.send(response).await?;
            }
        }
        self.behind = behind;
        Ok(current)
    }

    /// Tells idle watchers that asked for it how far the store has got, once they have been
    /// sent everything up to there.
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        // Only once every event up to the notified revision is on the stream; a stream still
        // catching up is notified at a later tick.
        let Some(reached) = self.catch_up().await? else {
            return Ok(());
        };
        let header = self.api.header(reached);
        let mut idle = Vec::new();
        for (&id, watcher) in self.watchers.iter_mut() {
            if watcher.progress_notify && !watcher.active {
                idle.push(id);
            }
            watcher.active = false;
        }
        for id in idle {
            let response = pb::WatchResponse {
                header: Some(header),
                watch_id: id,
                ..Default::default()
            };
            self.send(response).await?;
        }
        Ok(())
    }
}

/// Splits events (in revision order) into responses of about [`EVENTS_PER_RESPONSE`],
/// never splitting one revision.
fn chunks(events: Vec<(i64, mvccpb::Event)>) -> Vec<Vec<mvccpb::Event>> {
    let mut out: Vec<Vec<mvccpb::Event>> = Vec::new();
    let mut current: Vec<mvccpb::Event> = Vec::new();
    let mut last_revision = None;
    for (revision, event) in events {
        if current.len() >= EVENTS_PER_RESPONSE && last_revision != Some(revision) {
            out.push(std::mem::take(&mut current));
        }
        last_revision = Some(revision);
        current.push(event);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
