//! CAP under one partition, as `synod sim --scenario cap` measures it: the consistent
//! protocols serve only the majority side (sync serves neither), DNS-style propagation serves
//! reads on both sides and writes only where its primary is, stale, and nothing acknowledged
//! is lost anywhere.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use synod_dns::Dns;
use synod_primary_backup::PrimaryBackup;
use synod_raft::Raft;
use synod_sim::experiments::{cap, Cap};
use synod_sim::Protocol;
use synod_zab::Zab;

fn runs<P: Protocol>(seeds: std::ops::RangeInclusive<u64>) -> Cap {
    let mut total = Cap::default();
    for seed in seeds {
        total.add(cap::<P>(seed, &Default::default()));
    }
    assert!(total.violations.is_empty(), "{:?}", total.violations);
    assert_eq!(total.unconverged, 0, "{total:?}");
    total
}

#[test]
fn consensus_serves_the_majority_side_only_and_stays_linearizable() {
    for cap in [runs::<Raft>(1..=2), runs::<Zab>(1..=2)] {
        let [(minority_asked, minority_done), (_, majority_done)] = cap.writes;
        assert!(minority_asked > 0 && minority_done == 0, "{cap:?}");
        assert!(majority_done > 0, "{cap:?}");
        assert_eq!(cap.reads[0].1, 0, "{cap:?}");
        assert!(cap.staleness_us.is_empty(), "{cap:?}");
        assert_eq!(cap.linearizable, cap.runs);
    }
}

#[test]
fn synchronous_replication_serves_neither_side() {
    let cap = runs::<PrimaryBackup>(1..=2);
    assert_eq!((cap.writes[0].1, cap.writes[1].1), (0, 0), "{cap:?}");
    assert!(cap.writes[0].0 > 0 && cap.writes[1].0 > 0, "{cap:?}");
    assert_eq!(cap.linearizable, cap.runs);
}

#[test]
fn dns_answers_reads_on_both_sides_stale_and_writes_only_beside_its_primary() {
    let cap = runs::<Dns>(1..=2);
    let [(_, minority_writes), (majority_asked, majority_writes)] = cap.writes;
    assert!(
        minority_writes > 0,
        "the primary is on the minority side: {cap:?}"
    );
    assert!(majority_asked > 0 && majority_writes == 0, "{cap:?}");
    for (asked, answered) in cap.reads {
        assert!(
            asked > 0 && answered == asked,
            "every read answered: {cap:?}"
        );
    }
    assert!(!cap.staleness_us.is_empty(), "{cap:?}");
    assert_eq!(cap.linearizable, 0, "{cap:?}");
}
