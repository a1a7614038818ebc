//! etcd's JSON gateway on the client port: `POST /v3/kv/range` and the rest, with the request
//! and response messages in protobuf's JSON mapping (keys and values base64, 64-bit numbers as
//! strings, proto field names), so `curl` and HTTP-only tools work as against etcd. Each call
//! runs the same service code as the gRPC call of the same name. Streaming calls (watch,
//! election observe, snapshot, lease keep-alive) answer with one JSON object per line,
//! `{"result": ...}`, as etcd's gateway does; an error is `{"error": ..., "code": ...,
//! "message": ...}` with the HTTP status of its gRPC code (in a stream, etcd's
//! `{"error": {"grpc_code", "http_code", "message", "http_status"}}`). Unknown fields in a
//! request are ignored, as etcd's gateway ignores them.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::auth_server::Auth;
use synod_proto::etcdserverpb::cluster_server::Cluster;
use synod_proto::etcdserverpb::kv_server::Kv;
use synod_proto::etcdserverpb::lease_server::Lease;
use synod_proto::etcdserverpb::maintenance_server::Maintenance;
use synod_proto::v3electionpb::election_server::Election;
use synod_proto::v3lockpb::lock_server::Lock;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

use super::auth::AuthService;
use super::cluster::{ClusterService, MaintenanceService};
use super::kv::KvService;
use super::leadership::StreamGuard;
use super::lease::LeaseService;
use super::recipes::{ElectionService, LockService};
use super::Api;

/// What a gateway call answers.
pub enum Answer {
    /// One JSON document, with its HTTP status code.
    Whole(u16, String),
    /// JSON documents, one per line, as they come (the status is 200).
    Lines(mpsc::Receiver<String>),
}

/// Whether `path` is one of the gateway's.
pub fn handles(path: &str) -> bool {
    path.starts_with("/v3/")
}

/// `message` as a request of `caller`.
fn with_caller<T>(message: T, caller: &Option<super::auth::Caller>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller.clone());
    }
    request
}

/// Runs the gateway call `path` with the JSON `body`, as the user `token` names (etcd's
/// gateway takes the token from `/v3/auth/authenticate` in the `Authorization` header).
pub async fn call(api: &Arc<Api>, path: &str, body: &[u8], token: Option<&str>) -> Answer {
    // An empty body is an empty message, as `curl -X POST` without data sends.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    if !super::learner::gateway_serves(path) {
        if let Err(status) = super::learner::refuse(api) {
            return error(&status);
        }
    }
    // Who calls, as the gRPC interceptor finds it (a bad token is none for the auth calls,
    // where a client comes to log in again).
    let caller = match super::auth::caller_of(api, token) {
        Ok(caller) => caller,
        Err(_) if path.starts_with("/v3/auth/") => None,
        Err(status) => return error(&status),
    };
    macro_rules! unary {
        ($service:expr, $method:ident) => {
            match parse(body) {
                Ok(message) => whole($service.$method(with_caller(message, &caller)).await),
                Err(answer) => answer,
            }
        };
    }
    macro_rules! streaming {
        ($service:expr, $method:ident) => {
            match parse(body) {
                Ok(message) => match $service.$method(with_caller(message, &caller)).await {
                    Ok(responses) => lines(responses.into_inner()),
                    Err(status) => error(&status),
                },
                Err(answer) => answer,
            }
        };
    }
    let kv = KvService(api.clone());
    let lease = LeaseService(api.clone());
    let cluster = ClusterService(api.clone());
    let maintenance = MaintenanceService(api.clone());
    let lock = LockService(api.clone());
    let election = ElectionService(api.clone());
    let auth = AuthService(api.clone());
    match path {
        "/v3/auth/enable" => unary!(auth, auth_enable),
        "/v3/auth/disable" => unary!(auth, auth_disable),
        "/v3/auth/status" => unary!(auth, auth_status),
        "/v3/auth/authenticate" => unary!(auth, authenticate),
        "/v3/auth/user/add" => unary!(auth, user_add),
        "/v3/auth/user/get" => unary!(auth, user_get),
        "/v3/auth/user/list" => unary!(auth, user_list),
        "/v3/auth/user/delete" => unary!(auth, user_delete),
        "/v3/auth/user/changepw" => unary!(auth, user_change_password),
        "/v3/auth/user/grant" => unary!(auth, user_grant_role),
        "/v3/auth/user/revoke" => unary!(auth, user_revoke_role),
        "/v3/auth/role/add" => unary!(auth, role_add),
        "/v3/auth/role/get" => unary!(auth, role_get),
        "/v3/auth/role/list" => unary!(auth, role_list),
        "/v3/auth/role/delete" => unary!(auth, role_delete),
        "/v3/auth/role/grant" => unary!(auth, role_grant_permission),
        "/v3/auth/role/revoke" => unary!(auth, role_revoke_permission),
        "/v3/kv/range" => unary!(kv, range),
        "/v3/kv/put" => unary!(kv, put),
        "/v3/kv/deleterange" => unary!(kv, delete_range),
        "/v3/kv/txn" => unary!(kv, txn),
        "/v3/kv/compaction" => unary!(kv, compact),
        "/v3/lease/grant" => unary!(lease, lease_grant),
        "/v3/lease/revoke" | "/v3/kv/lease/revoke" => unary!(lease, lease_revoke),
        "/v3/lease/timetolive" | "/v3/kv/lease/timetolive" => {
            unary!(lease, lease_time_to_live)
        }
        "/v3/lease/leases" | "/v3/kv/lease/leases" => unary!(lease, lease_leases),
        "/v3/lease/keepalive" => match parse::<pb::LeaseKeepAliveRequest>(body) {
            Ok(message) => {
                if let Err(status) = api.caller(&with_caller((), &caller)) {
                    return error(&status);
                }
                let (out, answer) = mpsc::channel(1);
                let id = message.id;
                let _ = out.try_send(line(api.keep_alive(id, caller.as_ref()).await));
                Answer::Lines(answer)
            }
            Err(answer) => answer,
        },
        "/v3/cluster/member/list" => unary!(cluster, member_list),
        "/v3/maintenance/alarm" => unary!(maintenance, alarm),
        "/v3/maintenance/status" => unary!(maintenance, status),
        "/v3/maintenance/defragment" => unary!(maintenance, defragment),
        "/v3/maintenance/hash" => unary!(maintenance, hash),
        "/v3/maintenance/hashkv" => unary!(maintenance, hash_kv),
        "/v3/maintenance/transfer-leadership" => unary!(maintenance, move_leader),
        "/v3/maintenance/snapshot" => streaming!(maintenance, snapshot),
        "/v3/lock/lock" => unary!(lock, lock),
        "/v3/lock/unlock" => unary!(lock, unlock),
        "/v3/election/campaign" => unary!(election, campaign),
        "/v3/election/proclaim" => unary!(election, proclaim),
        "/v3/election/leader" => unary!(election, leader),
        "/v3/election/resign" => unary!(election, resign),
        "/v3/election/observe" => streaming!(election, observe),
        "/v3/watch" => match parse::<pb::WatchRequest>(body) {
            // One request (a creation), then the watch's responses until the client goes.
            Ok(message) => {
                let user = match api.caller(&with_caller((), &caller)) {
                    Ok(user) => user,
                    Err(status) => return error(&status),
                };
                let inbound = tokio_stream::once(Ok(message)).chain(tokio_stream::pending());
                let responses =
                    super::watch::start(api.clone(), inbound, StreamGuard::none(), user);
                lines(tokio_stream::wrappers::ReceiverStream::new(responses))
            }
            Err(answer) => answer,
        },
        _ => Answer::Whole(
            404,
            serde_json::json!({ "error": "Not Found", "code": 5, "message": "Not Found" })
                .to_string(),
        ),
    }
}

/// A request message from its JSON.
#[allow(clippy::result_large_err)] // an Answer is built once per call
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| {
        error(&Status::invalid_argument(format!(
            "the request is not valid JSON for this call: {e}"
        )))
    })
}

fn whole<T: Serialize>(result: Result<Response<T>, Status>) -> Answer {
    match result {
        Ok(response) => match serde_json::to_string(response.get_ref()) {
            Ok(json) => Answer::Whole(200, json),
            Err(e) => error(&Status::internal(e.to_string())),
        },
        Err(status) => error(&status),
    }
}

/// One line of a streamed answer: `{"result": ...}` or `{"error": ...}`.
fn line<T: Serialize>(item: Result<T, Status>) -> String {
    let json = match item {
        Ok(message) => {
            serde_json::to_value(message).map(|result| serde_json::json!({ "result": result }))
        }
        // etcd's gateway gives a stream's error in these words.
        Err(status) => Ok(serde_json::json!({ "error": {
            "grpc_code": status.code() as i32,
            "http_code": http_status(status.code()),
            "message": status.message(),
            "http_status": reason_phrase(http_status(status.code())),
        }})),
    };
    json.map(|j| j.to_string()).unwrap_or_default()
}

fn lines<T: Serialize + Send + 'static>(
    mut responses: impl Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
) -> Answer {
    let (out, answer) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(item) = responses.next().await {
            let failed = item.is_err();
            if out.send(line(item)).await.is_err() || failed {
                return;
            }
        }
    });
    Answer::Lines(answer)
}

fn error_body(status: &Status) -> serde_json::Value {
    serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    })
}

fn error(status: &Status) -> Answer {
    Answer::Whole(http_status(status.code()), error_body(status).to_string())
}

/// The reason phrase of an HTTP status the gateway gives.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// The HTTP status grpc-gateway (v1, as etcd 3.5's) gives a gRPC code.
fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 408,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}
