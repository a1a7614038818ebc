//! Recordings for viewers (`docs/trace-format.md`): recording does not change a run, the
//! document holds what the format promises, and a viewer's intervention forks the run at
//! its moment and no earlier.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use serde_json::Value;
use synod_core::NodeId;
use synod_sim::{run, Action, FaultSet, Intervention, Protocol, RunConfig};

fn config(seed: u64, faults: FaultSet) -> RunConfig {
    let mut config = RunConfig::new(seed, 3);
    config.faults = faults;
    config.clients = 3;
    config.keys = 3;
    config.safety_ticks = 600;
    config.liveness_ticks = 400;
    config
}

fn record<P: Protocol>(mut config: RunConfig) -> Value {
    config.record = true;
    let outcome = run::<P>(&config, &P::Options::default());
    serde_json::from_str(outcome.recording.as_deref().unwrap()).unwrap()
}

fn events(doc: &Value) -> &Vec<Value> {
    doc["events"].as_array().unwrap()
}

/// The first moment a node leads, and which node.
fn first_leader(doc: &Value, after: u64) -> Option<(u64, u64)> {
    events(doc).iter().find_map(|e| {
        let t = e["t"].as_u64()?;
        (e["k"] == "state" && e["role"] == "leader" && t > after)
            .then(|| (t, e["n"].as_u64().unwrap()))
    })
}

#[test]
fn recording_a_run_does_not_change_it() {
    for seed in 1..=3 {
        let plain = run::<synod_raft::Raft>(&config(seed, FaultSet::ALL), &Default::default());
        let mut recorded = config(seed, FaultSet::ALL);
        recorded.record = true;
        let recorded = run::<synod_raft::Raft>(&recorded, &Default::default());
        assert_eq!(plain.report, recorded.report, "seed {seed}");
        assert!(plain.recording.is_none());
    }
}

#[test]
fn a_recording_holds_what_the_format_promises() {
    let doc = record::<synod_raft::Raft>(config(5, FaultSet::ALL));
    assert_eq!(doc["format"], "synod-trace");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["run"]["protocol"], "raft");
    // Three members, and the two spares an operator adds under membership faults.
    assert_eq!(doc["members"].as_array().unwrap().len(), 5);
    let replay = doc["run"]["replay"].as_str().unwrap();
    assert!(replay.starts_with("synod sim --protocol raft --nodes 3 --seed 5 --faults all"));
    let events = events(&doc);
    let mut last = 0;
    let mut sends = std::collections::BTreeMap::new();
    let mut kinds = std::collections::BTreeSet::new();
    for e in events {
        let t = e["t"].as_u64().unwrap();
        assert!(t >= last, "events in time order");
        last = t;
        let kind = e["k"].as_str().unwrap();
        kinds.insert(kind.to_string());
        match kind {
            "send" => {
                let arrive = e["arrive"].as_u64();
                assert!(arrive.is_none_or(|a| a >= t));
                sends.insert(e["id"].as_u64().unwrap(), arrive);
            }
            "recv" | "lost" => {
                // At the time its send said, or later if the destination was paused then.
                let arrive = sends.remove(&e["id"].as_u64().unwrap());
                let arrive = arrive
                    .flatten()
                    .expect("a recorded send that was not dropped");
                assert!(arrive <= t, "arrives no earlier than its send said: {e}");
            }
            "log" => {
                let eras = e["eras"].as_array().unwrap();
                assert!(eras.len() <= 48);
            }
            _ => {}
        }
    }
    for kind in [
        "state", "log", "timer", "send", "recv", "sync", "net", "fault",
    ] {
        assert!(
            kinds.contains(kind),
            "a faulty run records {kind} events: {kinds:?}"
        );
    }
    let history = doc["history"].as_array().unwrap();
    assert!(history.len() > 10, "the clients' operations are there");
    assert!(history.iter().any(|op| op["outcome"] == "ok"));
    assert_eq!(doc["verdict"]["clean"], true, "{}", doc["verdict"]);
    assert_eq!(doc["verdict"]["linearizable"], "yes");
    assert_eq!(doc["truncated"], false);
}

/// Crash the first leader where a viewer would click: the run is the same up to that
/// moment, and then another node is elected.
fn crashing_the_leader_forks_the_run<P: Protocol>() {
    let base = config(2, FaultSet::NONE);
    let before = record::<P>(base.clone());
    let (elected, leader) = first_leader(&before, 0).expect("a leader is elected");
    let at = elected + 500_000;
    let mut forked = base.clone();
    forked.interventions = vec![Intervention {
        at,
        action: Action::Crash(NodeId(leader)),
    }];
    let after = record::<P>(forked);
    let prefix = |doc: &Value| -> Vec<Value> {
        events(doc)
            .iter()
            .filter(|e| e["t"].as_u64().unwrap() < at)
            .cloned()
            .collect()
    };
    assert_eq!(
        prefix(&before),
        prefix(&after),
        "the run up to the click is the same"
    );
    assert!(events(&after)
        .iter()
        .any(|e| e["k"] == "crash" && e["t"] == at && e["n"] == leader));
    let (_, next) = first_leader(&after, at).expect("a new leader after the crash");
    assert_ne!(next, leader);
    assert_eq!(
        after["run"]["interventions"],
        format!("crash:{leader}@{at}")
    );
    assert_eq!(after["verdict"]["clean"], true, "{}", after["verdict"]);
}

#[test]
fn crashing_the_raft_leader_forks_the_run() {
    crashing_the_leader_forks_the_run::<synod_raft::Raft>();
}

#[test]
fn crashing_the_multi_paxos_leader_forks_the_run() {
    crashing_the_leader_forks_the_run::<synod_paxos::MultiPaxos>();
}

#[test]
fn crashing_the_zab_leader_forks_the_run() {
    crashing_the_leader_forks_the_run::<synod_zab::Zab>();
}

/// Basic Paxos has no leader: its recording shows slots, with accepted ballots, and the
/// proposers' duel as messages.
#[test]
fn basic_paxos_records_its_slots() {
    let mut config = config(3, FaultSet::NONE);
    config.spread_clients = true;
    let doc = record::<synod_paxos::BasicPaxos>(config);
    let logs: Vec<&Value> = events(&doc).iter().filter(|e| e["k"] == "log").collect();
    assert!(logs
        .iter()
        .any(|e| !e["eras"].as_array().unwrap().is_empty()));
    let prepares = events(&doc)
        .iter()
        .filter(|e| e["k"] == "send" && e["type"] == "Prepare")
        .count();
    assert!(prepares > 0);
    assert_eq!(doc["verdict"]["clean"], true, "{}", doc["verdict"]);
}

#[test]
fn a_cut_link_shows_in_the_network_and_heals() {
    let mut config = config(4, FaultSet::NONE);
    config.interventions = Intervention::parse_list("cut:1-2@1000000,mend:1-2@2000000", 3).unwrap();
    let doc = record::<synod_raft::Raft>(config);
    let nets: Vec<(u64, usize)> = events(&doc)
        .iter()
        .filter(|e| e["k"] == "net")
        .map(|e| (e["t"].as_u64().unwrap(), e["cut"].as_array().unwrap().len()))
        .collect();
    assert_eq!(nets, vec![(1_000_000, 2), (2_000_000, 0)]);
}

/// A viewer clicks at a moment it is shown: everything that happened at that moment
/// happened before the click. Crashing a node at the very moment it became leader leaves it
/// leader at that moment, then down.
#[test]
fn an_intervention_comes_after_every_event_of_its_moment() {
    let base = config(6, FaultSet::NONE);
    let before = record::<synod_raft::Raft>(base.clone());
    let (at, leader) = first_leader(&before, 0).expect("a leader is elected");
    let mut forked = base;
    forked.interventions = vec![Intervention {
        at,
        action: Action::Crash(NodeId(leader)),
    }];
    let after = record::<synod_raft::Raft>(forked);
    let until_click: Vec<&Value> = events(&before)
        .iter()
        .filter(|e| e["t"].as_u64().unwrap() <= at)
        .collect();
    let fork: Vec<&Value> = events(&after).iter().take(until_click.len()).collect();
    assert_eq!(
        until_click, fork,
        "the fork holds every event of the click's moment"
    );
    let next = &events(&after)[until_click.len()];
    assert_eq!(
        (next["k"].as_str(), next["t"].as_u64()),
        (Some("note"), Some(at)),
        "{next}"
    );
    assert!(next["text"].as_str().unwrap().contains("viewer: crash"));
}
