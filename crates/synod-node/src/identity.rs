//! Who this member is: its id and its cluster's, kept in the data directory.
//!
//! A member that boots a cluster takes its id from the cluster list and derives the cluster's
//! id from the list and the token. A member that joins a running cluster (`--initial-cluster-
//! state existing`, after `member add`) knows neither: it waits for a member to dial its peer
//! address, and takes the cluster id and its own id from that member's handshake (the id
//! `member add` gave that address). Either way both are written to `member` in the data
//! directory, so a restart is the same member of the same cluster whatever the flags say, and
//! a data directory is never started as another member. A joining member keeps what it was
//! told only once the membership it applied (committed) lists that id at its own peer URL:
//! a stale member still dialling an address that once belonged to another id, or an entry
//! that was cut, cannot give it an identity for good.
//!
//! A member that joined has nobody to ask before the first member dials it; a member that
//! restarts before its identity was confirmed finds state but no `member` file and is refused
//! with the reason (start it again on an empty data directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use synod_core::{Member, Membership, NodeId};
use synod_storage::Recovered;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::ServerConfig;

/// The file in the data directory.
const FILE: &str = "member";

/// This member's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Its id.
    pub id: NodeId,
    /// Its cluster's id.
    pub cluster_id: u64,
    /// Whether it joined a running cluster (rather than booting it).
    pub joined: bool,
    /// Whether it is kept in the data directory (a joining member's is kept once the
    /// membership confirms it).
    pub kept: bool,
}

impl Identity {
    fn encode(&self) -> String {
        format!(
            "id={}\ncluster={:x}\njoined={}\n",
            self.id.0, self.cluster_id, self.joined
        )
    }

    fn decode(text: &str) -> Result<Identity, String> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| format!("no {name}= line"))
        };
        let id = field("id")?
            .parse::<u64>()
            .map_err(|e| format!("id: {e}"))?;
        let cluster_id =
            u64::from_str_radix(field("cluster")?, 16).map_err(|e| format!("cluster: {e}"))?;
        let joined = field("joined")?
            .parse::<bool>()
            .map_err(|e| format!("joined: {e}"))?;
        if id == 0 {
            return Err("id 0".into());
        }
        Ok(Identity {
            id: NodeId(id),
            cluster_id,
            joined,
            kept: true,
        })
    }
}

/// Reads this member's identity from its data directory, or establishes it: from the flags
/// for a member that boots the cluster, from the first member that dials for one that joins.
pub async fn establish(
    config: &ServerConfig,
    recovered: &Recovered,
    peer_listener: &TcpListener,
    tls: Option<&crate::tls::PeerTls>,
) -> Result<Identity, String> {
    let path = config.data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let identity = Identity::decode(&text).map_err(|e| {
                format!(
                    "{} is damaged ({e}); it says who this member is",
                    path.display()
                )
            })?;
            if !identity.joined && !config.join && identity.id != config.id {
                return Err(format!(
                    "this data directory belongs to member {}, not {}",
                    identity.id, config.id
                ));
            }
            return Ok(identity);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let has_state = recovered.snapshot.is_some()
        || !recovered.entries.is_empty()
        || recovered.hard_state.is_some();
    let identity = if config.join {
        if has_state {
            return Err(
                "--initial-cluster-state existing joins with an empty data directory; this one holds a member's state".into(),
            );
        }
        info!(
            address = %config.peer_listen(),
            "joining a running cluster: waiting for a member to dial (after `member add` of this peer URL)"
        );
        let settings = config.replicated_settings();
        let (cluster_id, id) = crate::transport::await_identity(
            peer_listener,
            &settings,
            Duration::from_secs(5),
            tls,
            &config.initial_cluster.values().cloned().collect(),
        )
        .await;
        Identity {
            id,
            cluster_id,
            joined: true,
            kept: false,
        }
    } else {
        Identity {
            id: config.id,
            cluster_id: config.cluster_id(),
            joined: false,
            kept: true,
        }
    };
    if !identity.joined {
        keep(&config.data_dir, &identity)?;
    }
    Ok(identity)
}

/// Writes the identity to the data directory, for good.
pub fn keep(dir: &Path, identity: &Identity) -> Result<(), String> {
    write(dir, identity).map_err(|e| format!("cannot write {}: {e}", dir.join(FILE).display()))
}

/// What the membership a joining member applied says of the identity it was given: `Ok(true)`
/// once it lists this id at this member's peer URL (the identity is then kept), `Ok(false)`
/// while it does not list this id yet, and an error when it lists this id at another URL or
/// this URL under another id (a stale member dialled: this member was told a wrong id).
pub fn confirm(membership: &Membership, id: NodeId, peer_address: &str) -> Result<bool, String> {
    let ours = |m: &Member| {
        m.peer_urls
            .iter()
            .any(|u| peer_address_of(u) == peer_address)
    };
    if let Some(other) = membership.members.iter().find(|m| ours(m) && m.id != id) {
        return Err(format!(
            "this member was told it is {id}, but the membership gives its peer address {peer_address} to {}; start it again on an empty data directory",
            other.id
        ));
    }
    match membership.get(id) {
        Some(m) if ours(m) => Ok(true),
        Some(m) => Err(format!(
            "this member was told it is {id}, but the membership gives {id} the peer URLs {:?}, not {peer_address}",
            m.peer_urls
        )),
        None => Ok(false),
    }
}

/// Writes the file whole or not at all: a temporary file, synced, renamed, the directory
/// synced.
fn write(dir: &Path, identity: &Identity) -> std::io::Result<()> {
    let temp = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(identity.encode().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The membership a cluster boots with: every member of the cluster list, a voter, with its
/// name and peer URL.
pub fn boot_membership(config: &ServerConfig) -> Membership {
    let members: Vec<Member> = config
        .initial_cluster
        .iter()
        .map(|(&id, address)| Member {
            id,
            name: config
                .member_names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("n{}", id.0)),
            peer_urls: vec![format!("{}://{address}", config.peer_scheme())],
            client_urls: Vec::new(),
            learner: false,
        })
        .collect();
    let next_id = members.last().map_or(1, |m| m.id.0 + 1);
    Membership { members, next_id }
}

/// Every other member of `membership` and the `host:port` its first peer URL names.
pub fn peers_of(membership: &Membership, me: NodeId) -> BTreeMap<NodeId, String> {
    membership
        .members
        .iter()
        .filter(|m| m.id != me)
        .filter_map(|m| Some((m.id, peer_address(m.peer_urls.first()?))))
        .collect()
}

/// `host:port` of a peer URL (`http://host:port/`, `https://...` or `host:port`).
pub fn peer_address(url: &str) -> String {
    peer_address_of(url).to_string()
}

fn peer_address_of(url: &str) -> &str {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url)
        .trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_members_id_is_confirmed_only_at_its_own_address() {
        let member = |id: u64, url: &str| Member {
            id: NodeId(id),
            peer_urls: vec![url.to_string()],
            ..Member::default()
        };
        let before = Membership {
            members: vec![member(1, "http://a:1")],
            next_id: 2,
        };
        let mut after = before.clone();
        after.members.push(member(2, "http://b:1/"));
        assert_eq!(
            confirm(&before, NodeId(2), "b:1"),
            Ok(false),
            "not added yet"
        );
        assert_eq!(confirm(&after, NodeId(2), "b:1"), Ok(true));
        // Told 3 by a stale member, while the membership gives this address to 2.
        assert!(confirm(&after, NodeId(3), "b:1")
            .unwrap_err()
            .contains("to n2"));
        // Told 2, while the membership gives 2 another address.
        assert!(confirm(&after, NodeId(2), "c:1")
            .unwrap_err()
            .contains("not c:1"));
    }

    #[test]
    fn the_file_round_trips_and_damage_is_named() {
        let identity = Identity {
            id: NodeId(4),
            cluster_id: 0xdead_beef,
            joined: true,
            kept: true,
        };
        assert_eq!(Identity::decode(&identity.encode()), Ok(identity));
        assert!(Identity::decode("id=4\n").unwrap_err().contains("cluster"));
        assert!(Identity::decode("id=x\ncluster=1\njoined=true\n")
            .unwrap_err()
            .contains("id"));
    }
}
