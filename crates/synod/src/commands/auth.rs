//! `synod user ...`, `synod role ...` and `synod auth ...`: etcd's Auth API, with etcdctl's
//! words and output, so a runbook written for one reads the same with the other.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use synod_proto::authpb;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::auth_client::AuthClient;

use super::client::{Authed, Connection, KeyRange};

/// `user ...`.
#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user: NAME:PASSWORD, or NAME with --new-user-password or --no-password.
    Add {
        /// NAME or NAME:PASSWORD.
        #[arg(id = "new_user", value_name = "NAME[:PASSWORD]")]
        user: String,
        /// The new user's password.
        #[arg(long)]
        new_user_password: Option<String>,
        /// A user that logs in by client certificate only.
        #[arg(long)]
        no_password: bool,
    },
    /// Delete a user.
    Delete {
        /// The user.
        name: String,
    },
    /// A user's roles.
    Get {
        /// The user.
        name: String,
    },
    /// Every user.
    List,
    /// Set a user's password (its tokens stop working).
    Passwd {
        /// NAME:PASSWORD.
        #[arg(id = "changed_user", value_name = "NAME:PASSWORD")]
        user: String,
    },
    /// Give a user a role.
    GrantRole {
        /// The user.
        name: String,
        /// The role.
        role: String,
    },
    /// Take a role from a user.
    RevokeRole {
        /// The user.
        name: String,
        /// The role.
        role: String,
    },
}

/// `role ...`.
#[derive(Args, Debug)]
pub struct RoleArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: RoleCommand,
}

/// What a permission allows.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum PermissionType {
    Read,
    Write,
    Readwrite,
}

#[derive(Subcommand, Debug)]
enum RoleCommand {
    /// Add a role.
    Add {
        /// The role.
        name: String,
    },
    /// Delete a role (every user loses it).
    Delete {
        /// The role.
        name: String,
    },
    /// A role's permissions.
    Get {
        /// The role.
        name: String,
    },
    /// Every role.
    List,
    /// Let a role read, write or both on a key, a range, a prefix or every key from one on.
    GrantPermission {
        /// The role.
        name: String,
        /// read, write or readwrite.
        #[arg(value_enum)]
        permission: PermissionType,
        #[command(flatten)]
        range: KeyRange,
    },
    /// Take a role's permission on exactly these keys.
    RevokePermission {
        /// The role.
        name: String,
        #[command(flatten)]
        range: KeyRange,
    },
}

/// `auth ...`.
#[derive(Args, Debug)]
pub struct AuthArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand, Debug)]
enum AuthCommand {
    /// Turn auth on (needs the user root with the role root).
    Enable,
    /// Turn auth off.
    Disable,
    /// Whether auth is on, and the auth revision.
    Status,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn client(connection: &Connection) -> anyhow::Result<AuthClient<Authed>> {
    Ok(AuthClient::new(connection.channel().await?))
}

/// A failed call as etcdctl prints it.
fn failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// Splits `NAME:PASSWORD`.
fn name_and_password(user: &str) -> anyhow::Result<(&str, &str)> {
    match user.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name, password)),
        _ => bail!("give NAME:PASSWORD"),
    }
}

/// Runs `user ...`.
pub fn user(args: UserArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut auth = client(&args.connection).await?;
        match args.command {
            UserCommand::Add {
                user,
                new_user_password,
                no_password,
            } => {
                let (name, password) = match (user.split_once(':'), new_user_password) {
                    _ if no_password => (user.clone(), String::new()),
                    (Some((name, password)), None) => (name.to_string(), password.to_string()),
                    (None, Some(password)) => (user.clone(), password),
                    _ => bail!("give NAME:PASSWORD, --new-user-password or --no-password"),
                };
                let request = pb::AuthUserAddRequest {
                    name: name.clone(),
                    password,
                    options: Some(authpb::UserAddOptions { no_password }),
                    ..Default::default()
                };
                auth.user_add(request).await.map_err(failed)?;
                println!("User {name} created");
            }
            UserCommand::Delete { name } => {
                let request = pb::AuthUserDeleteRequest { name: name.clone() };
                auth.user_delete(request).await.map_err(failed)?;
                println!("User {name} deleted");
            }
            UserCommand::Get { name } => {
                let request = pb::AuthUserGetRequest { name: name.clone() };
                let roles = auth.user_get(request).await.map_err(failed)?.into_inner();
                println!("User: {name}");
                println!("Roles: {}", roles.roles.join(" "));
            }
            UserCommand::List => {
                let users = auth
                    .user_list(pb::AuthUserListRequest {})
                    .await
                    .map_err(failed)?;
                for name in users.into_inner().users {
                    println!("{name}");
                }
            }
            UserCommand::Passwd { user } => {
                let (name, password) = name_and_password(&user)?;
                let request = pb::AuthUserChangePasswordRequest {
                    name: name.into(),
                    password: password.into(),
                    ..Default::default()
                };
                auth.user_change_password(request).await.map_err(failed)?;
                println!("Password updated");
            }
            UserCommand::GrantRole { name, role } => {
                let request = pb::AuthUserGrantRoleRequest {
                    user: name.clone(),
                    role: role.clone(),
                };
                auth.user_grant_role(request).await.map_err(failed)?;
                println!("Role {role} is granted to user {name}");
            }
            UserCommand::RevokeRole { name, role } => {
                let request = pb::AuthUserRevokeRoleRequest {
                    name: name.clone(),
                    role: role.clone(),
                };
                auth.user_revoke_role(request).await.map_err(failed)?;
                println!("Role {role} is revoked from user {name}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A permission's keys as etcdctl prints them.
fn describe(p: &authpb::Permission) -> String {
    let key = String::from_utf8_lossy(&p.key);
    if p.range_end.is_empty() {
        return format!("\t{key}");
    }
    if p.range_end.as_ref() == [0] {
        return format!("\t[{key}, <open ended>");
    }
    let end = String::from_utf8_lossy(&p.range_end);
    let mut line = format!("\t[{key}, {end})");
    if super::client::prefix_end(&p.key) == p.range_end.as_ref() {
        line.push_str(&format!(" (prefix {key})"));
    }
    line
}

/// Runs `role ...`.
pub fn role(args: RoleArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut auth = client(&args.connection).await?;
        match args.command {
            RoleCommand::Add { name } => {
                let request = pb::AuthRoleAddRequest { name: name.clone() };
                auth.role_add(request).await.map_err(failed)?;
                println!("Role {name} created");
            }
            RoleCommand::Delete { name } => {
                let request = pb::AuthRoleDeleteRequest { role: name.clone() };
                auth.role_delete(request).await.map_err(failed)?;
                println!("Role {name} deleted");
            }
            RoleCommand::Get { name } => {
                let request = pb::AuthRoleGetRequest { role: name.clone() };
                let perms = auth.role_get(request).await.map_err(failed)?.into_inner();
                println!("Role {name}");
                let of = |wanted: [i32; 2]| {
                    perms
                        .perm
                        .iter()
                        .filter(|p| wanted.contains(&p.perm_type))
                        .map(describe)
                        .collect::<Vec<_>>()
                };
                println!("KV Read:");
                for line in of([0, 2]) {
                    println!("{line}");
                }
                println!("KV Write:");
                for line in of([1, 2]) {
                    println!("{line}");
                }
            }
            RoleCommand::List => {
                let roles = auth
                    .role_list(pb::AuthRoleListRequest {})
                    .await
                    .map_err(failed)?;
                for name in roles.into_inner().roles {
                    println!("{name}");
                }
            }
            RoleCommand::GrantPermission {
                name,
                permission,
                range,
            } => {
                let (key, range_end) = range.bytes()?;
                let perm_type = match permission {
                    PermissionType::Read => 0,
                    PermissionType::Write => 1,
                    PermissionType::Readwrite => 2,
                };
                let request = pb::AuthRoleGrantPermissionRequest {
                    name: name.clone(),
                    perm: Some(authpb::Permission {
                        perm_type,
                        key: key.into(),
                        range_end: range_end.into(),
                    }),
                };
                auth.role_grant_permission(request).await.map_err(failed)?;
                println!("Role {name} updated");
            }
            RoleCommand::RevokePermission { name, range } => {
                let (key, range_end) = range.bytes()?;
                let request = pb::AuthRoleRevokePermissionRequest {
                    role: name.clone(),
                    key: key.into(),
                    range_end: range_end.into(),
                };
                auth.role_revoke_permission(request).await.map_err(failed)?;
                println!(
                    "Permission of range {} is revoked from role {name}",
                    range.key()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `auth ...`.
pub fn auth(args: AuthArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut auth = client(&args.connection).await?;
        match args.command {
            AuthCommand::Enable => {
                auth.auth_enable(pb::AuthEnableRequest {})
                    .await
                    .map_err(failed)?;
                println!("Authentication Enabled");
            }
            AuthCommand::Disable => {
                auth.auth_disable(pb::AuthDisableRequest {})
                    .await
                    .map_err(failed)?;
                println!("Authentication Disabled");
            }
            AuthCommand::Status => {
                let status = auth
                    .auth_status(pb::AuthStatusRequest {})
                    .await
                    .map_err(failed)?
                    .into_inner();
                println!("Authentication Status: {}", status.enabled);
                println!("AuthRevision: {}", status.auth_revision);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
