//! etcd's authentication and authorization as part of the replicated state: whether auth is
//! on, users (with password hashes) and roles (with permissions on keys and ranges), changed
//! only through the log. So every member holds the same rules at the same log position, and
//! a write is checked against its user's permissions when it is applied (deterministically,
//! on every replica alike), not only when it was accepted: a permission revoked between the
//! two is in force for the write.
//!
//! etcd's rules: enabling auth needs a user `root` with the role `root`; the `root` role may
//! do anything (read and write every key, and manage users, roles, the cluster and the
//! store); while auth is on, `root` cannot be deleted, lose its role, and the `root` role
//! cannot be deleted. Passwords arrive hashed (bcrypt, by the member that took the request):
//! the log never holds a password.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use synod_core::codec::{DecodeError, Decoder, Encoder};
use thiserror::Error;

use crate::request::{KeyRange, Request};

/// The user and the role that may do anything.
pub const ROOT: &str = "root";

/// What a permission allows on its keys (etcd's `Permission.Type`, numbered as there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Range, watch, compare.
    Read,
    /// Put, delete.
    Write,
    /// Both.
    ReadWrite,
}

impl Access {
    /// etcd's number for it.
    pub fn code(self) -> i32 {
        match self {
            Access::Read => 0,
            Access::Write => 1,
            Access::ReadWrite => 2,
        }
    }

    /// The access with etcd's number `code`.
    pub fn from_code(code: i32) -> Option<Access> {
        Some(match code {
            0 => Access::Read,
            1 => Access::Write,
            2 => Access::ReadWrite,
            _ => return None,
        })
    }

    fn covers(self, wanted: Access) -> bool {
        self == Access::ReadWrite || self == wanted
    }
}

/// Access to a key or a range of keys (with the KV API's range conventions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    /// What it allows.
    pub access: Access,
    /// On which keys.
    pub range: KeyRange,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct User {
    /// The bcrypt hash of its password; `None` for a user that cannot log in with one (it
    /// authenticates by client certificate).
    pub password_hash: Option<String>,
    /// Its roles.
    pub roles: BTreeSet<String>,
    /// The auth revision at which its password was last set: tokens issued before are void.
    pub since: u64,
}

/// A role: a set of permissions.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Role {
    /// Its permissions, in the order granted.
    pub permissions: Vec<Permission>,
}

/// The auth part of the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AuthState {
    /// Whether requests are checked at all.
    pub enabled: bool,
    /// Counts changes (etcd's auth revision).
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// The key tokens are signed with, chosen anew at each enable (so disabling and enabling
    /// again voids every token).
    pub token_key: Bytes,
}

/// A change to the auth state, as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest {
    /// Turn auth on, signing tokens with `token_key` from now on.
    Enable {
        /// Random bytes chosen by the member that took the request.
        token_key: Bytes,
    },
    /// Turn auth off.
    Disable,
    /// Add a user.
    UserAdd {
        /// Its name.
        name: String,
        /// Its password's bcrypt hash; `None`: no password.
        password_hash: Option<String>,
    },
    /// Delete a user.
    UserDelete {
        /// Its name.
        name: String,
    },
    /// Set a user's password (its tokens are void from now on).
    UserChangePassword {
        /// Its name.
        name: String,
        /// The new password's bcrypt hash.
        password_hash: String,
    },
    /// Give a user a role.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Take a role from a user.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Add a role.
    RoleAdd {
        /// Its name.
        name: String,
    },
    /// Delete a role (and take it from every user).
    RoleDelete {
        /// Its name.
        name: String,
    },
    /// Give a role a permission; one on the same keys is replaced.
    RoleGrantPermission {
        /// The role.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// Take the permission on exactly these keys from a role.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// The keys the permission is on.
        range: KeyRange,
    },
}

/// Why an auth request or a check failed, with etcd's messages (its clients match on them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AuthError {
    /// Enabling auth without a root user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// Enabling auth while root lacks the root role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// Adding a user that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A request without a user (auth is on, and no token or certificate came with it).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// No such user.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// Adding a role that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// No such role.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// A role without a name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// The user may not do that.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// Revoking a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Disabling auth while it is off, and the like.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A change that would lock root out while auth is on.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// Wrong user or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A token that does not verify, expired, or whose user changed since.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Too many failed logins: wait before trying again.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
}

impl AuthError {
    const ALL: [AuthError; 16] = [
        AuthError::RootUserNotExist,
        AuthError::RootRoleNotExist,
        AuthError::UserAlreadyExist,
        AuthError::UserEmpty,
        AuthError::UserNotFound,
        AuthError::RoleAlreadyExist,
        AuthError::RoleNotFound,
        AuthError::RoleEmpty,
        AuthError::PermissionDenied,
        AuthError::RoleNotGranted,
        AuthError::PermissionNotGranted,
        AuthError::AuthNotEnabled,
        AuthError::InvalidAuthMgmt,
        AuthError::AuthFailed,
        AuthError::InvalidAuthToken,
        AuthError::TooManyRequests,
    ];

    /// Its number in snapshots (a client session's remembered answer).
    pub(crate) fn code(self) -> u8 {
        Self::ALL.iter().position(|e| *e == self).unwrap_or(0) as u8
    }

    /// The error numbered `code`.
    pub(crate) fn from_code(code: u8) -> Option<AuthError> {
        Self::ALL.get(code as usize).copied()
    }
}

impl AuthState {
    /// Whether `user` has the root role.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Applies a change; a failed one changes nothing.
    pub fn apply(&mut self, request: &AuthRequest) -> Result<(), AuthError> {
        let nonempty = |name: &str, empty| {
            if name.is_empty() {
                Err(empty)
            } else {
                Ok(())
            }
        };
        match request {
            AuthRequest::Enable { token_key } => {
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_key = token_key.clone();
            }
            AuthRequest::Disable => self.enabled = false,
            AuthRequest::UserAdd {
                name,
                password_hash,
            } => {
                nonempty(name, AuthError::UserEmpty)?;
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let user = User {
                    password_hash: password_hash.clone(),
                    roles: BTreeSet::new(),
                    since: self.revision + 1,
                };
                self.users.insert(name.clone(), user);
            }
            AuthRequest::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
            }
            AuthRequest::UserChangePassword {
                name,
                password_hash,
            } => {
                let since = self.revision + 1;
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password_hash = Some(password_hash.clone());
                user.since = since;
            }
            AuthRequest::UserGrantRole { user, role } => {
                // The root role need not be added first (etcd's rule).
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let user = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                user.roles.insert(role.clone());
            }
            AuthRequest::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let user = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !user.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthRequest::RoleAdd { name } => {
                nonempty(name, AuthError::RoleEmpty)?;
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthRequest::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            AuthRequest::RoleGrantPermission { role, permission } => {
                let role = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                match role
                    .permissions
                    .iter_mut()
                    .find(|p| p.range == permission.range)
                {
                    Some(existing) => existing.access = permission.access,
                    None => role.permissions.push(permission.clone()),
                }
            }
            AuthRequest::RoleRevokePermission { role, range } => {
                let role = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = role.permissions.len();
                role.permissions.retain(|p| p.range != *range);
                if role.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
        }
        self.revision += 1;
        Ok(())
    }

    /// Whether `user` may have `access` to every key of `range`: the user's permissions of
    /// that kind, together, must cover it (etcd merges them the same way).
    pub fn allows(&self, user: &str, access: Access, range: &KeyRange) -> bool {
        let Some(found) = self.users.get(user) else {
            return false;
        };
        if found.roles.contains(ROOT) {
            return true;
        }
        let mut granted: Vec<(Bytes, Option<Bytes>)> = found
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| &role.permissions)
            .filter(|p| p.access.covers(access))
            .map(|p| span(&p.range))
            .collect();
        granted.sort();
        let (start, end) = span(range);
        // Sweep the granted spans in order: the wanted one is covered if they reach from its
        // start to its end without a gap.
        let mut reached = start;
        for (from, to) in granted {
            if from > reached {
                break;
            }
            match to {
                None => return true,
                Some(to) if to > reached => reached = to,
                Some(_) => {}
            }
        }
        end.is_some_and(|end| reached >= end)
    }

    /// Checks that `user` may run `request`, as etcd does: reads need read access, writes
    /// write access (and read access when they return the previous value), a transaction
    /// every one of its compares and operations in both branches, compaction and auth
    /// changes the root role. Lease revocation is checked by the store, which knows the
    /// lease's keys.
    pub fn check(&self, user: &str, request: &Request) -> Result<(), AuthError> {
        let need = |access, range: &KeyRange| {
            if self.allows(user, access, range) {
                Ok(())
            } else {
                Err(AuthError::PermissionDenied)
            }
        };
        match request {
            Request::Range(r) => need(Access::Read, &r.range),
            Request::Put(p) => {
                let key = KeyRange::key(&p.key);
                need(Access::Write, &key)?;
                if p.prev_kv {
                    need(Access::Read, &key)?;
                }
                Ok(())
            }
            Request::DeleteRange(d) => {
                need(Access::Write, &d.range)?;
                if d.prev_kv {
                    need(Access::Read, &d.range)?;
                }
                Ok(())
            }
            Request::Txn(t) => {
                for compare in &t.compare {
                    need(Access::Read, &compare.range)?;
                }
                for op in t.success.iter().chain(&t.failure) {
                    self.check(user, op)?;
                }
                Ok(())
            }
            Request::LeaseGrant(_) | Request::LeaseGrantUnnumbered(_) | Request::LeaseRevoke(_) => {
                Ok(())
            }
            Request::Compact(_)
            | Request::Auth(_)
            | Request::LeaseEpoch(_)
            | Request::LeaseExpire(_)
            | Request::Alarm(_)
            | Request::As { .. } => {
                if self.is_admin(user) {
                    Ok(())
                } else {
                    Err(AuthError::PermissionDenied)
                }
            }
        }
    }
}

/// A range as a half-open span of keys: start, and end (`None`: the end of the key space).
fn span(range: &KeyRange) -> (Bytes, Option<Bytes>) {
    if range.range_end.is_empty() {
        let mut end = range.key.to_vec();
        end.push(0);
        (range.key.clone(), Some(Bytes::from(end)))
    } else if range.is_unbounded() {
        (range.key.clone(), None)
    } else {
        (range.key.clone(), Some(range.range_end.clone()))
    }
}

// Encoding, for the log and for snapshots.

const TAG_ENABLE: u64 = 0;
const TAG_DISABLE: u64 = 1;
const TAG_USER_ADD: u64 = 2;
const TAG_USER_DELETE: u64 = 3;
const TAG_USER_CHANGE_PASSWORD: u64 = 4;
const TAG_USER_GRANT_ROLE: u64 = 5;
const TAG_USER_REVOKE_ROLE: u64 = 6;
const TAG_ROLE_ADD: u64 = 7;
const TAG_ROLE_DELETE: u64 = 8;
const TAG_ROLE_GRANT_PERMISSION: u64 = 9;
const TAG_ROLE_REVOKE_PERMISSION: u64 = 10;
const AUTH_TAGS: u64 = 11;

fn text(dec: &mut Decoder<'_>, what: &'static str) -> Result<String, DecodeError> {
    let offset = dec.offset();
    let bytes = dec.bytes(what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::UnknownTag {
        what,
        tag: 0,
        offset,
    })
}

fn encode_permission(enc: &mut Encoder, p: &Permission) {
    enc.u8(p.access.code() as u8)
        .bytes(&p.range.key)
        .bytes(&p.range.range_end);
}

fn decode_permission(dec: &mut Decoder<'_>) -> Result<Permission, DecodeError> {
    let offset = dec.offset();
    let code = dec.u8("access")?;
    let access = Access::from_code(i32::from(code)).ok_or(DecodeError::UnknownTag {
        what: "access",
        tag: u64::from(code),
        offset,
    })?;
    Ok(Permission {
        access,
        range: KeyRange {
            key: dec.owned_bytes("permission key")?,
            range_end: dec.owned_bytes("permission range end")?,
        },
    })
}

impl AuthRequest {
    pub(crate) fn encode(&self, enc: &mut Encoder) {
        match self {
            AuthRequest::Enable { token_key } => {
                enc.u64(TAG_ENABLE).bytes(token_key);
            }
            AuthRequest::Disable => {
                enc.u64(TAG_DISABLE);
            }
            AuthRequest::UserAdd {
                name,
                password_hash,
            } => {
                enc.u64(TAG_USER_ADD)
                    .bytes(name.as_bytes())
                    .bool(password_hash.is_some())
                    .bytes(password_hash.as_deref().unwrap_or("").as_bytes());
            }
            AuthRequest::UserDelete { name } => {
                enc.u64(TAG_USER_DELETE).bytes(name.as_bytes());
            }
            AuthRequest::UserChangePassword {
                name,
                password_hash,
            } => {
                enc.u64(TAG_USER_CHANGE_PASSWORD)
                    .bytes(name.as_bytes())
                    .bytes(password_hash.as_bytes());
            }
            AuthRequest::UserGrantRole { user, role } => {
                enc.u64(TAG_USER_GRANT_ROLE)
                    .bytes(user.as_bytes())
                    .bytes(role.as_bytes());
            }
            AuthRequest::UserRevokeRole { user, role } => {
                enc.u64(TAG_USER_REVOKE_ROLE)
                    .bytes(user.as_bytes())
                    .bytes(role.as_bytes());
            }
            AuthRequest::RoleAdd { name } => {
                enc.u64(TAG_ROLE_ADD).bytes(name.as_bytes());
            }
            AuthRequest::RoleDelete { name } => {
                enc.u64(TAG_ROLE_DELETE).bytes(name.as_bytes());
            }
            AuthRequest::RoleGrantPermission { role, permission } => {
                enc.u64(TAG_ROLE_GRANT_PERMISSION).bytes(role.as_bytes());
                encode_permission(enc, permission);
            }
            AuthRequest::RoleRevokePermission { role, range } => {
                enc.u64(TAG_ROLE_REVOKE_PERMISSION)
                    .bytes(role.as_bytes())
                    .bytes(&range.key)
                    .bytes(&range.range_end);
            }
        }
    }

    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<AuthRequest, DecodeError> {
        Ok(match dec.tag("auth request", AUTH_TAGS)? {
            TAG_ENABLE => AuthRequest::Enable {
                token_key: dec.owned_bytes("token key")?,
            },
            TAG_DISABLE => AuthRequest::Disable,
            TAG_USER_ADD => {
                let name = text(dec, "user")?;
                let has_password = dec.bool("has password")?;
                let hash = text(dec, "password hash")?;
                AuthRequest::UserAdd {
                    name,
                    password_hash: has_password.then_some(hash),
                }
            }
            TAG_USER_DELETE => AuthRequest::UserDelete {
                name: text(dec, "user")?,
            },
            TAG_USER_CHANGE_PASSWORD => AuthRequest::UserChangePassword {
                name: text(dec, "user")?,
                password_hash: text(dec, "password hash")?,
            },
            TAG_USER_GRANT_ROLE => AuthRequest::UserGrantRole {
                user: text(dec, "user")?,
                role: text(dec, "role")?,
            },
            TAG_USER_REVOKE_ROLE => AuthRequest::UserRevokeRole {
                user: text(dec, "user")?,
                role: text(dec, "role")?,
            },
            TAG_ROLE_ADD => AuthRequest::RoleAdd {
                name: text(dec, "role")?,
            },
            TAG_ROLE_DELETE => AuthRequest::RoleDelete {
                name: text(dec, "role")?,
            },
            TAG_ROLE_GRANT_PERMISSION => AuthRequest::RoleGrantPermission {
                role: text(dec, "role")?,
                permission: decode_permission(dec)?,
            },
            _ => AuthRequest::RoleRevokePermission {
                role: text(dec, "role")?,
                range: KeyRange {
                    key: dec.owned_bytes("permission key")?,
                    range_end: dec.owned_bytes("permission range end")?,
                },
            },
        })
    }
}

impl AuthState {
    pub(crate) fn encode(&self, enc: &mut Encoder) {
        enc.bool(self.enabled)
            .u64(self.revision)
            .bytes(&self.token_key)
            .u64(self.users.len() as u64);
        for (name, user) in &self.users {
            enc.bytes(name.as_bytes())
                .bool(user.password_hash.is_some())
                .bytes(user.password_hash.as_deref().unwrap_or("").as_bytes())
                .u64(user.since)
                .u64(user.roles.len() as u64);
            for role in &user.roles {
                enc.bytes(role.as_bytes());
            }
        }
        enc.u64(self.roles.len() as u64);
        for (name, role) in &self.roles {
            enc.bytes(name.as_bytes())
                .u64(role.permissions.len() as u64);
            for p in &role.permissions {
                encode_permission(enc, p);
            }
        }
    }

    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<AuthState, DecodeError> {
        let mut state = AuthState {
            enabled: dec.bool("auth enabled")?,
            revision: dec.u64("auth revision")?,
            token_key: dec.owned_bytes("token key")?,
            ..AuthState::default()
        };
        for _ in 0..dec.count("user count")? {
            let name = text(dec, "user")?;
            let has_password = dec.bool("has password")?;
            let hash = text(dec, "password hash")?;
            let since = dec.u64("since")?;
            let mut roles = BTreeSet::new();
            for _ in 0..dec.count("role count")? {
                roles.insert(text(dec, "role")?);
            }
            let user = User {
                password_hash: has_password.then_some(hash),
                roles,
                since,
            };
            state.users.insert(name, user);
        }
        for _ in 0..dec.count("role count")? {
            let name = text(dec, "role")?;
            let mut permissions = Vec::new();
            for _ in 0..dec.count("permission count")? {
                permissions.push(decode_permission(dec)?);
            }
            state.roles.insert(name, Role { permissions });
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(state: &mut AuthState, request: AuthRequest) {
        state.apply(&request).expect("applies");
    }

    fn reader_of(prefix: &str) -> AuthState {
        let mut state = AuthState::default();
        add(&mut state, AuthRequest::RoleAdd { name: "r".into() });
        let permission = Permission {
            access: Access::Read,
            range: KeyRange::prefix(prefix),
        };
        add(
            &mut state,
            AuthRequest::RoleGrantPermission {
                role: "r".into(),
                permission,
            },
        );
        add(
            &mut state,
            AuthRequest::UserAdd {
                name: "u".into(),
                password_hash: None,
            },
        );
        add(
            &mut state,
            AuthRequest::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            },
        );
        state
    }

    #[test]
    fn permissions_cover_ranges_together_and_nothing_more() {
        let mut state = reader_of("a/");
        assert!(state.allows("u", Access::Read, &KeyRange::key("a/x")));
        assert!(state.allows("u", Access::Read, &KeyRange::prefix("a/b")));
        assert!(!state.allows("u", Access::Write, &KeyRange::key("a/x")));
        assert!(!state.allows("u", Access::Read, &KeyRange::key("b")));
        assert!(!state.allows("u", Access::Read, &KeyRange::prefix("a")));
        assert!(!state.allows("nobody", Access::Read, &KeyRange::key("a/x")));
        // Two adjacent grants together cover a range neither covers alone.
        let permission = Permission {
            access: Access::ReadWrite,
            range: KeyRange {
                key: Bytes::from_static(b"a0"),
                range_end: Bytes::from_static(b"c"),
            },
        };
        add(
            &mut state,
            AuthRequest::RoleGrantPermission {
                role: "r".into(),
                permission,
            },
        );
        let across = KeyRange {
            key: Bytes::from_static(b"a/"),
            range_end: Bytes::from_static(b"b"),
        };
        assert!(state.allows("u", Access::Read, &across));
        assert!(!state.allows("u", Access::Write, &across));
        // Every key from one on needs an unbounded grant.
        let everything = KeyRange {
            key: Bytes::from_static(b"a/"),
            range_end: Bytes::from_static(&[0]),
        };
        assert!(!state.allows("u", Access::Read, &everything));
    }

    #[test]
    fn etcds_root_rules() {
        let mut state = AuthState::default();
        let enable = AuthRequest::Enable {
            token_key: Bytes::from_static(b"k"),
        };
        assert_eq!(state.apply(&enable), Err(AuthError::RootUserNotExist));
        add(
            &mut state,
            AuthRequest::UserAdd {
                name: ROOT.into(),
                password_hash: Some("h".into()),
            },
        );
        assert_eq!(state.apply(&enable), Err(AuthError::RootRoleNotExist));
        add(
            &mut state,
            AuthRequest::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
        );
        add(&mut state, enable);
        assert!(state.enabled && state.is_admin(ROOT));
        for locked_out in [
            AuthRequest::UserDelete { name: ROOT.into() },
            AuthRequest::RoleDelete { name: ROOT.into() },
            AuthRequest::UserRevokeRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
        ] {
            assert_eq!(state.apply(&locked_out), Err(AuthError::InvalidAuthMgmt));
        }
        let before = state.clone();
        assert_eq!(
            state.apply(&AuthRequest::RoleDelete { name: "x".into() }),
            Err(AuthError::RoleNotFound)
        );
        assert_eq!(state, before, "a failed change changes nothing");
    }

    #[test]
    fn the_store_checks_a_clients_write_when_it_is_applied() {
        use crate::request::PutRequest;
        use crate::store::{KvError, KvStore};
        let put = |user: Option<&str>, since: Option<u64>| Request::As {
            user: user.map(String::from),
            since,
            request: Box::new(Request::Put(PutRequest {
                key: Bytes::from_static(b"app/x"),
                value: Bytes::from_static(b"1"),
                ..Default::default()
            })),
        };
        let mut store = KvStore::new();
        store.execute(&put(None, None)).expect("auth is off");
        let reader = reader_of("app/");
        for change in [
            AuthRequest::UserAdd {
                name: ROOT.into(),
                password_hash: Some("h".into()),
            },
            AuthRequest::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            AuthRequest::RoleAdd { name: "r".into() },
            AuthRequest::RoleGrantPermission {
                role: "r".into(),
                permission: reader.roles["r"].permissions[0].clone(),
            },
            AuthRequest::UserAdd {
                name: "u".into(),
                password_hash: None,
            },
            AuthRequest::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            },
            AuthRequest::Enable {
                token_key: Bytes::from_static(b"key"),
            },
        ] {
            store.execute(&Request::Auth(change)).expect("applies");
        }
        let refused = |store: &mut KvStore, request: &Request| match store.execute(request) {
            Err(KvError::Auth(error)) => error,
            other => panic!("not refused: {other:?}"),
        };
        // Taken while auth was off, applied after it went on: refused.
        assert_eq!(refused(&mut store, &put(None, None)), AuthError::UserEmpty);
        assert_eq!(
            refused(&mut store, &put(Some("u"), None)),
            AuthError::PermissionDenied
        );
        let since = store.auth().users[ROOT].since;
        assert_eq!(
            refused(&mut store, &put(Some(ROOT), Some(since - 1))),
            AuthError::InvalidAuthToken,
            "a token from before the password changed"
        );
        store
            .execute(&put(Some(ROOT), Some(since)))
            .expect("root's token");
        store
            .execute(&put(Some(ROOT), None))
            .expect("root's certificate");
        // Auth changes need root while auth is on.
        let as_user = |user: &str| Request::As {
            user: Some(user.into()),
            since: None,
            request: Box::new(Request::Auth(AuthRequest::Disable)),
        };
        assert_eq!(
            refused(&mut store, &as_user("u")),
            AuthError::PermissionDenied
        );
        // Snapshots carry it all.
        let restored = KvStore::restore(&store.snapshot()).expect("restores");
        assert_eq!(restored.auth(), store.auth());
        store.execute(&as_user(ROOT)).expect("root disables auth");
        assert!(!store.auth().enabled);
    }

    #[test]
    fn requests_and_state_round_trip() {
        let state = reader_of("a/");
        let mut enc = Encoder::with_capacity(64);
        state.encode(&mut enc);
        let bytes = enc.finish();
        let mut dec = Decoder::new(&bytes);
        assert_eq!(AuthState::decode(&mut dec).expect("decodes"), state);
        for request in [
            AuthRequest::Enable {
                token_key: Bytes::from_static(b"key"),
            },
            AuthRequest::Disable,
            AuthRequest::UserAdd {
                name: "u".into(),
                password_hash: None,
            },
            AuthRequest::UserChangePassword {
                name: "u".into(),
                password_hash: "h".into(),
            },
            AuthRequest::RoleRevokePermission {
                role: "r".into(),
                range: KeyRange::prefix("p"),
            },
        ] {
            let mut enc = Encoder::with_capacity(64);
            request.encode(&mut enc);
            let bytes = enc.finish();
            let mut dec = Decoder::new(&bytes);
            assert_eq!(AuthRequest::decode(&mut dec).expect("decodes"), request);
        }
        for error in AuthError::ALL {
            assert_eq!(AuthError::from_code(error.code()), Some(error));
        }
    }
}
