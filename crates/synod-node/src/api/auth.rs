//! etcd's Auth service, and who the caller of every other request is.
//!
//! Users, roles and whether auth is on live in the replicated state machine
//! (`synod_kv::auth`); every change goes through the log. While auth is on, each request is
//! made by a user: the one its token names (the `token` metadata, from `Authenticate`), or
//! else the common name of the client certificate the connection presented (verified against
//! `--trusted-ca-file`), as in etcd. Requests are checked against that user's permissions
//! here, to refuse early, and writes again by the state machine when they are applied, so a
//! permission revoked meanwhile holds on every member alike.
//!
//! Tokens are signed, not stored: `NAME.SINCE.EXPIRY.MAC`, an HMAC-SHA256 under the token
//! key that the log chose when auth was enabled. Any member checks any member's token, so a
//! client may move between members and requests forwarded to the leader keep their user. A
//! token is void once it expires (`--auth-token-ttl`), once its user's password changes or
//! the user is deleted (SINCE no longer matches), and once auth is disabled and enabled
//! again (a new key).
//!
//! Passwords are hashed with bcrypt (etcd's cost, 10) by the member that took the request, so
//! the log holds no password. Failed logins are counted per user name: after
//! [`FAILURES_ALLOWED`] within [`FAILURE_WINDOW`], that name is refused with etcd's "too many
//! requests" until the window passes, and at most [`VERIFYING_MAX`] password checks run at
//! once, so a flood of logins costs bounded CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use synod_kv as kv;
use synod_kv::auth::{Access, AuthError, AuthRequest, AuthState, Permission, ROOT};
use synod_proto::authpb;
use synod_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{attempt, errors, Api, Attempt};
use crate::http::ClientInfo;

/// etcd's bcrypt cost.
const BCRYPT_COST: u32 = 10;
/// Failed logins of one user name allowed per window.
pub const FAILURES_ALLOWED: u32 = 5;
/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Password checks (bcrypt, tens of milliseconds of CPU each) running at once, at most.
pub const VERIFYING_MAX: usize = 2;
/// The metadata key etcd's clients send their token in.
pub const TOKEN: &str = "token";
/// How long a token made for a forwarded request lives.
const FORWARD_TOKEN_TTL: Duration = Duration::from_secs(30);

/// Who made a request, as the interceptor found out: `None` when it gave no token and no
/// client certificate.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub Option<Principal>);

/// A user, and for one that showed a token, the password generation the token was issued
/// for (the state machine refuses its writes once the password changed).
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    pub name: String,
    pub since: Option<u64>,
}

/// The login bookkeeping of one member.
#[derive(Debug)]
pub(crate) struct Logins {
    failures: Mutex<HashMap<String, (Instant, u32)>>,
    verifying: Arc<tokio::sync::Semaphore>,
}

impl Default for Logins {
    fn default() -> Self {
        Logins {
            failures: Mutex::new(HashMap::new()),
            verifying: Arc::new(tokio::sync::Semaphore::new(VERIFYING_MAX)),
        }
    }
}

/// Names tracked at once; past this, logins are refused until old windows pass.
const NAMES_MAX: usize = 10_000;
/// Bytes of a user name that count (longer names are tracked by this prefix).
const NAME_BYTES_MAX: usize = 256;

impl Logins {
    fn key(name: &str) -> String {
        let mut end = name.len().min(NAME_BYTES_MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_string()
    }

    /// Counts an attempt for `name` before its password is checked, so that attempts made
    /// all at once count as much as attempts made one after another; refuses it once the
    /// name has had [`FAILURES_ALLOWED`] within the window.
    fn begin(&self, name: &str) -> Result<(), AuthError> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= NAMES_MAX {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= NAMES_MAX {
                return Err(AuthError::TooManyRequests);
            }
        }
        let entry = failures
            .entry(Self::key(name))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= FAILURES_ALLOWED {
            return Err(AuthError::TooManyRequests);
        }
        entry.1 += 1;
        Ok(())
    }

    /// The attempt begun for `name` succeeded: it does not count.
    fn succeeded(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = failures.get_mut(&Self::key(name)) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    /// The attempt begun for `name` failed; `true` when that used up its allowance (to log
    /// once).
    fn failed(&self, name: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(&Self::key(name))
            .is_some_and(|(_, count)| *count == FAILURES_ALLOWED)
    }
}

/// A hash to check a password against when the user does not exist (or has no password),
/// so that such a login costs what any other does and its answer's timing tells nothing.
fn decoy_hash() -> Option<&'static str> {
    static DECOY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| bcrypt::hash("synod: no such user", BCRYPT_COST).ok())
        .as_deref()
}

/// An auth error as etcd's gRPC status.
pub fn status(error: AuthError) -> Status {
    let message = error.to_string();
    match error {
        AuthError::PermissionDenied => Status::permission_denied(message),
        AuthError::InvalidAuthToken => Status::unauthenticated(message),
        AuthError::TooManyRequests => Status::resource_exhausted(message),
        AuthError::AuthFailed
        | AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::InvalidAuthMgmt => Status::invalid_argument(message),
        _ => Status::failed_precondition(message),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(key: &[u8], text: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(text.as_bytes());
    Some(mac)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A token for `user` under `auth`, valid for `ttl`.
pub(crate) fn issue(auth: &AuthState, user: &str, ttl: Duration) -> Option<String> {
    let since = auth.users.get(user)?.since;
    let expiry = now_secs() + ttl.as_secs().max(1);
    let body = format!("{}.{since}.{expiry}", hex(user.as_bytes()));
    let signature = mac(&auth.token_key, &body)?.finalize().into_bytes();
    Some(format!("{body}.{}", hex(&signature)))
}

/// The user a token names (and the password generation it was issued for), if it verifies,
/// has not expired, and its user is unchanged.
pub(crate) fn verify(auth: &AuthState, token: &str) -> Result<(String, u64), AuthError> {
    let invalid = AuthError::InvalidAuthToken;
    let (body, signature) = token.rsplit_once('.').ok_or(invalid)?;
    let signature = unhex(signature).ok_or(invalid)?;
    mac(&auth.token_key, body)
        .ok_or(invalid)?
        .verify_slice(&signature)
        .map_err(|_| invalid)?;
    let mut parts = body.split('.');
    let (Some(name), Some(since), Some(expiry), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid);
    };
    let name = String::from_utf8(unhex(name).ok_or(invalid)?).map_err(|_| invalid)?;
    let since: u64 = since.parse().map_err(|_| invalid)?;
    let expiry: u64 = expiry.parse().map_err(|_| invalid)?;
    if expiry <= now_secs() || auth.users.get(&name).is_none_or(|u| u.since != since) {
        return Err(invalid);
    }
    Ok((name, since))
}

/// An interceptor for every service: finds the caller (token first, else the client
/// certificate's common name) and refuses a token that does not verify while auth is on
/// (etcd's clients log in again when told so). With `lenient` (the Auth service, where a
/// client with a stale token comes to log in again), such a token counts as none.
pub(crate) fn guard(
    api: Arc<Api>,
    lenient: bool,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let store = api.node.shared.kv();
        let auth = store.auth();
        if !auth.enabled {
            return Ok(request);
        }
        let caller = match request.metadata().get(TOKEN) {
            Some(token) => {
                let verified = token
                    .to_str()
                    .map_err(|_| AuthError::InvalidAuthToken)
                    .and_then(|token| verify(auth, token));
                match verified {
                    Ok((name, since)) => Some(Principal {
                        name,
                        since: Some(since),
                    }),
                    Err(_) if lenient => None,
                    Err(e) => return Err(status(e)),
                }
            }
            None => request
                .extensions()
                .get::<ClientInfo>()
                .and_then(|info| info.common_name.as_deref())
                .map(|name| Principal {
                    name: name.to_string(),
                    since: None,
                }),
        };
        drop(store);
        request.extensions_mut().insert(Caller(caller));
        Ok(request)
    }
}

/// The caller a gateway request's token names, while auth is on (`None` without a token or
/// while auth is off).
pub(crate) fn caller_of(api: &Api, token: Option<&str>) -> Result<Option<Caller>, Status> {
    let store = api.node.shared.kv();
    let (Some(token), true) = (token, store.auth().enabled) else {
        return Ok(None);
    };
    let (name, since) = verify(store.auth(), token.trim()).map_err(status)?;
    Ok(Some(Caller(Some(Principal {
        name,
        since: Some(since),
    }))))
}

/// The caller of `request` under `auth`: `None` while auth is off, etcd's "user name is
/// empty" for a request that names none while it is on.
fn principal_under<T>(auth: &AuthState, request: &Request<T>) -> Result<Option<Principal>, Status> {
    if !auth.enabled {
        return Ok(None);
    }
    match request.extensions().get::<Caller>() {
        Some(Caller(Some(principal))) => Ok(Some(principal.clone())),
        _ => Err(status(AuthError::UserEmpty)),
    }
}

impl Api {
    /// The user a request is made by while auth is on (`None` while it is off), or etcd's
    /// "user name is empty" for a request that names none.
    pub(crate) fn caller<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        Ok(self.principal(request)?.map(|p| p.name))
    }

    /// [`Api::caller`], with the password generation of its token.
    pub(crate) fn principal<T>(&self, request: &Request<T>) -> Result<Option<Principal>, Status> {
        principal_under(self.node.shared.kv().auth(), request)
    }

    /// `write` as made by the request's caller: checked now against the rules in force, and
    /// again by the state machine when it is applied (where a write taken while auth was off
    /// is refused if auth is on by then).
    pub(crate) fn as_caller<T>(
        &self,
        request: &Request<T>,
        write: kv::Request,
    ) -> Result<kv::Request, Status> {
        let store = self.node.shared.kv();
        let principal = principal_under(store.auth(), request)?;
        if let Some(p) = &principal {
            store.check_user(&p.name, &write).map_err(status)?;
        }
        Ok(kv::Request::As {
            user: principal.as_ref().map(|p| p.name.clone()),
            since: principal.and_then(|p| p.since),
            request: Box::new(write),
        })
    }

    /// Checks the caller may have `access` to `range` (reads, watches, recipes); the caller.
    pub(crate) fn check_access<T>(
        &self,
        request: &Request<T>,
        access: Access,
        range: &kv::KeyRange,
    ) -> Result<Option<Principal>, Status> {
        let store = self.node.shared.kv();
        let principal = principal_under(store.auth(), request)?;
        match &principal {
            Some(p) if !store.auth().allows(&p.name, access, range) => {
                Err(status(AuthError::PermissionDenied))
            }
            _ => Ok(principal),
        }
    }

    /// Checks the caller has the root role (cluster, maintenance and auth management).
    pub(crate) fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let store = self.node.shared.kv();
        match principal_under(store.auth(), request)? {
            Some(p) if !store.auth().is_admin(&p.name) => Err(status(AuthError::PermissionDenied)),
            _ => Ok(()),
        }
    }

    /// While auth is on, a short-lived token for root, for the calls members make to each
    /// other's client ports on their own account (the corruption check's HashKV).
    pub fn member_token(&self) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        let store = self.node.shared.kv();
        if !store.auth().enabled {
            return None;
        }
        issue(store.auth(), ROOT, FORWARD_TOKEN_TTL)?.parse().ok()
    }

    /// A token for a request this member forwards on its caller's behalf.
    pub(crate) fn forward_token<T>(&self, request: &Request<T>) -> Option<String> {
        let Some(Caller(Some(principal))) = request.extensions().get::<Caller>() else {
            return None;
        };
        issue(
            self.node.shared.kv().auth(),
            &principal.name,
            FORWARD_TOKEN_TTL,
        )
    }

    /// Proposes an auth change made by the request's caller and waits for it.
    async fn change<T: Clone, R>(
        &self,
        request: Request<T>,
        change: AuthRequest,
        answer: impl Fn(pb::ResponseHeader) -> R,
    ) -> Result<Response<R>, Status> {
        let write = self.as_caller(&request, kv::Request::Auth(change))?;
        self.anywhere(request, |_| async {
            Ok(match attempt(self.node.propose(&write).await)? {
                Attempt::Done(applied) => Attempt::Done(answer(self.header(applied.revision))),
                Attempt::NotLeader => Attempt::NotLeader,
            })
        })
        .await
    }
}

fn hash(password: &str) -> Result<String, Status> {
    bcrypt::hash(password, BCRYPT_COST)
        .map_err(|e| Status::internal(format!("cannot hash the password: {e}")))
}

/// Hashes on a blocking thread: bcrypt takes tens of milliseconds.
async fn hash_password(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

fn permission_of(p: &authpb::Permission) -> Result<Permission, Status> {
    let access = Access::from_code(p.perm_type)
        .ok_or_else(|| Status::invalid_argument("etcdserver: permission type unknown"))?;
    Ok(Permission {
        access,
        range: kv::KeyRange {
            key: p.key.clone(),
            range_end: p.range_end.clone(),
        },
    })
}

/// The Auth service.
#[derive(Debug)]
pub struct AuthService(pub Arc<Api>);

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let api = &*self.0;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Status::internal(e.to_string()))?;
        let change = AuthRequest::Enable {
            token_key: Bytes::copy_from_slice(&key),
        };
        let answer = api
            .change(request, change, |h| pb::AuthEnableResponse {
                header: Some(h),
            })
            .await?;
        info!("auth enabled");
        Ok(answer)
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let answer = api
            .change(request, AuthRequest::Disable, |h| pb::AuthDisableResponse {
                header: Some(h),
            })
            .await?;
        info!("auth disabled");
        Ok(answer)
    }

    async fn auth_status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let api = &*self.0;
        let store = api.node.shared.kv();
        Ok(Response::new(pb::AuthStatusResponse {
            header: Some(api.header(store.revision())),
            enabled: store.auth().enabled,
            auth_revision: store.auth().revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let api = &*self.0;
        let remote = request
            .extensions()
            .get::<ClientInfo>()
            .and_then(|i| i.remote);
        let pb::AuthenticateRequest { name, password } = request.into_inner();
        let hash = {
            let store = api.node.shared.kv();
            if !store.auth().enabled {
                return Err(status(AuthError::AuthNotEnabled));
            }
            store
                .auth()
                .users
                .get(&name)
                .and_then(|u| u.password_hash.clone())
        };
        api.logins.begin(&name).map_err(status)?;
        // At most a few password checks at once; a login that waits past the request
        // timeout for its turn is told to come back later.
        let turn = api.logins.verifying.clone().acquire_owned();
        let turn = match tokio::time::timeout(api.config.request_timeout, turn).await {
            Ok(Ok(turn)) => turn,
            Ok(Err(_)) => return Err(errors::stopped()),
            Err(_) => {
                api.logins.succeeded(&name);
                return Err(status(AuthError::TooManyRequests));
            }
        };
        let known = hash.is_some();
        let hash = hash.or_else(|| decoy_hash().map(String::from));
        let verified = tokio::task::spawn_blocking(move || {
            let matches = hash.is_some_and(|h| bcrypt::verify(password, &h).unwrap_or(false));
            matches && known
        })
        .await
        .unwrap_or(false);
        drop(turn);
        if !verified {
            if api.logins.failed(&name) {
                warn!(user = %name, client = ?remote, window = ?FAILURE_WINDOW,
                      "too many failed logins for this user: refusing it for a while");
            }
            return Err(status(AuthError::AuthFailed));
        }
        api.logins.succeeded(&name);
        let store = api.node.shared.kv();
        let token = issue(store.auth(), &name, api.config.auth_token_ttl)
            .ok_or_else(|| status(AuthError::AuthFailed))?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: Some(api.header(store.revision())),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let r = request.get_ref();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let password_hash = if no_password {
            None
        } else if !r.hashed_password.is_empty() {
            Some(r.hashed_password.clone())
        } else {
            Some(hash_password(r.password.clone()).await?)
        };
        let change = AuthRequest::UserAdd {
            name: r.name.clone(),
            password_hash,
        };
        api.change(request, change, |h| pb::AuthUserAddResponse {
            header: Some(h),
        })
        .await
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let store = api.node.shared.kv();
        let user = store
            .auth()
            .users
            .get(&request.get_ref().name)
            .ok_or_else(|| status(AuthError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(api.header(store.revision())),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let store = api.node.shared.kv();
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(api.header(store.revision())),
            users: store.auth().users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let change = AuthRequest::UserDelete {
            name: request.get_ref().name.clone(),
        };
        api.change(request, change, |h| pb::AuthUserDeleteResponse {
            header: Some(h),
        })
        .await
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let r = request.get_ref();
        let password_hash = if r.hashed_password.is_empty() {
            hash_password(r.password.clone()).await?
        } else {
            r.hashed_password.clone()
        };
        let change = AuthRequest::UserChangePassword {
            name: r.name.clone(),
            password_hash,
        };
        api.change(request, change, |h| pb::AuthUserChangePasswordResponse {
            header: Some(h),
        })
        .await
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let change = AuthRequest::UserGrantRole {
            user: request.get_ref().user.clone(),
            role: request.get_ref().role.clone(),
        };
        api.change(request, change, |h| pb::AuthUserGrantRoleResponse {
            header: Some(h),
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let change = AuthRequest::UserRevokeRole {
            user: request.get_ref().name.clone(),
            role: request.get_ref().role.clone(),
        };
        api.change(request, change, |h| pb::AuthUserRevokeRoleResponse {
            header: Some(h),
        })
        .await
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let change = AuthRequest::RoleAdd {
            name: request.get_ref().name.clone(),
        };
        api.change(request, change, |h| pb::AuthRoleAddResponse {
            header: Some(h),
        })
        .await
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let store = api.node.shared.kv();
        let name = &request.get_ref().role;
        let perm = if name == ROOT && !store.auth().roles.contains_key(ROOT) {
            Vec::new()
        } else {
            let role = store
                .auth()
                .roles
                .get(name)
                .ok_or_else(|| status(AuthError::RoleNotFound))?;
            role.permissions
                .iter()
                .map(|p| authpb::Permission {
                    perm_type: p.access.code(),
                    key: p.range.key.clone(),
                    range_end: p.range.range_end.clone(),
                })
                .collect()
        };
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(api.header(store.revision())),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let store = api.node.shared.kv();
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(api.header(store.revision())),
            roles: store.auth().roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let change = AuthRequest::RoleDelete {
            name: request.get_ref().role.clone(),
        };
        api.change(request, change, |h| pb::AuthRoleDeleteResponse {
            header: Some(h),
        })
        .await
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let permission = request
            .get_ref()
            .perm
            .as_ref()
            .ok_or_else(|| status(AuthError::PermissionNotGranted))
            .and_then(permission_of)?;
        let change = AuthRequest::RoleGrantPermission {
            role: request.get_ref().name.clone(),
            permission,
        };
        api.change(request, change, |h| pb::AuthRoleGrantPermissionResponse {
            header: Some(h),
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let api = &*self.0;
        api.check_admin(&request)?;
        let r = request.get_ref();
        let change = AuthRequest::RoleRevokePermission {
            role: r.role.clone(),
            range: kv::KeyRange {
                key: r.key.clone(),
                range_end: r.range_end.clone(),
            },
        };
        api.change(request, change, |h| pb::AuthRoleRevokePermissionResponse {
            header: Some(h),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(user: &str, since: u64) -> AuthState {
        let mut auth = AuthState {
            token_key: Bytes::from_static(b"0123456789abcdef"),
            ..AuthState::default()
        };
        let found = synod_kv::auth::User {
            since,
            ..Default::default()
        };
        auth.users.insert(user.into(), found);
        auth
    }

    #[test]
    fn tokens_verify_until_their_user_or_key_changes() {
        let auth = auth_with("alice", 3);
        let token = issue(&auth, "alice", Duration::from_secs(60)).expect("issued");
        assert_eq!(verify(&auth, &token), Ok(("alice".into(), 3)));
        // Another key (auth enabled again), a changed password, a deleted user.
        let mut rekeyed = auth.clone();
        rekeyed.token_key = Bytes::from_static(b"another key");
        let changed = auth_with("alice", 4);
        let deleted = AuthState {
            users: Default::default(),
            ..auth.clone()
        };
        for state in [&rekeyed, &changed, &deleted] {
            assert_eq!(verify(state, &token), Err(AuthError::InvalidAuthToken));
        }
        // Tampered with: another name, a later expiry, garbage.
        let forged = token.replacen(&hex(b"alice"), &hex(b"root"), 1);
        assert_eq!(verify(&auth, &forged), Err(AuthError::InvalidAuthToken));
        let (body, signature) = token.rsplit_once('.').expect("signed");
        let (head, _) = body.rsplit_once('.').expect("expiry");
        let later = format!("{head}.{}.{signature}", u64::MAX);
        assert_eq!(verify(&auth, &later), Err(AuthError::InvalidAuthToken));
        for garbage in ["", ".", "a.b.c.d", "zz.1.2.zz", "\u{fffd}"] {
            assert_eq!(verify(&auth, garbage), Err(AuthError::InvalidAuthToken));
        }
    }

    #[test]
    fn an_expired_token_is_void() {
        let auth = auth_with("bob", 1);
        let body = format!("{}.1.{}", hex(b"bob"), now_secs() - 1);
        let signature = mac(&auth.token_key, &body)
            .expect("mac")
            .finalize()
            .into_bytes();
        let token = format!("{body}.{}", hex(&signature));
        assert_eq!(verify(&auth, &token), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn failed_logins_lock_a_name_out_for_a_window() {
        let logins = Logins::default();
        for i in 1..FAILURES_ALLOWED {
            assert_eq!(logins.begin("mallory"), Ok(()), "attempt {i}");
            assert!(!logins.failed("mallory"));
        }
        assert_eq!(logins.begin("mallory"), Ok(()));
        assert!(logins.failed("mallory"), "the limit is reported once");
        assert_eq!(logins.begin("mallory"), Err(AuthError::TooManyRequests));
        assert_eq!(
            logins.begin("alice"),
            Ok(()),
            "other names are not affected"
        );
        // Attempts begun together count before any is checked; a success gives one back.
        logins.succeeded("alice");
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(logins.begin("bob"), Ok(()));
        }
        assert_eq!(logins.begin("bob"), Err(AuthError::TooManyRequests));
        logins.succeeded("bob");
        assert_eq!(logins.begin("bob"), Ok(()));
        // Very long names are tracked by their first bytes.
        let long = "x".repeat(10_000);
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(logins.begin(&long), Ok(()));
        }
        assert_eq!(
            logins.begin(&format!("{long}y")),
            Err(AuthError::TooManyRequests)
        );
    }
}
