//! What a gossip node holds: the newest version of every key it has heard of, tombstones
//! included, with the digests anti-entropy compares.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{KeySpan, LogIndex};

use crate::version::Version;

/// Anti-entropy compares stores bucket by bucket: a key's bucket is its hash modulo this.
pub const BUCKETS: usize = 256;

/// One version of one key, as it travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// When and by whom it was written.
    pub version: Version,
    /// The value, or `None` for a delete (a tombstone).
    pub value: Option<Bytes>,
}

impl Record {
    /// Bytes it occupies on the wire, roughly; for batch limits.
    pub fn size_bytes(&self) -> usize {
        24 + self.key.len() + self.value.as_ref().map_or(0, Bytes::len)
    }

    /// Appends its encoding.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.bytes(&self.key).u64(self.version.0);
        match &self.value {
            Some(value) => enc.bool(true).bytes(value),
            None => enc.bool(false),
        };
    }

    /// Reads what [`Record::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Record, DecodeError> {
        let key = dec.owned_bytes("key")?;
        let version = Version(dec.u64("version")?);
        let value = if dec.bool("has value")? {
            Some(dec.owned_bytes("value")?)
        } else {
            None
        };
        Ok(Record {
            key,
            version,
            value,
        })
    }
}

/// What the store keeps of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Its newest version here.
    pub version: Version,
    /// Its value, `None` once deleted.
    pub value: Option<Bytes>,
    /// The local index under which this version was applied to the state machine.
    pub at: LogIndex,
}

/// The newest version of every key, with a digest per bucket of keys.
#[derive(Clone, Debug)]
pub struct Store {
    map: BTreeMap<Bytes, Held>,
    /// (bucket, key) for every key, so a bucket's keys are read without a scan.
    by_bucket: BTreeSet<(u16, Bytes)>,
    /// The wrapping sum of a hash of every (key, version) in each bucket.
    digests: Vec<u64>,
    /// Keys and values held, in bytes.
    bytes: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            map: BTreeMap::new(),
            by_bucket: BTreeSet::new(),
            digests: vec![0; BUCKETS],
            bytes: 0,
        }
    }
}

impl Store {
    /// The newest version of `key` here.
    pub fn get(&self, key: &[u8]) -> Option<&Held> {
        self.map.get(key)
    }

    /// Takes `record` if it is newer than what is held of its key (last writer wins),
    /// recording it as applied at `at`. Returns whether it was taken.
    pub fn merge(&mut self, record: &Record, at: LogIndex) -> bool {
        let bucket = bucket_of(&record.key);
        if let Some(held) = self.map.get_mut(&record.key) {
            if held.version >= record.version {
                return false;
            }
            let old = mix(&record.key, held.version);
            self.digests[bucket] = self.digests[bucket].wrapping_sub(old);
            self.bytes -= held.value.as_ref().map_or(0, Bytes::len);
            held.version = record.version;
            held.value = record.value.clone();
            held.at = at;
        } else {
            self.by_bucket.insert((bucket as u16, record.key.clone()));
            self.bytes += record.key.len();
            self.map.insert(
                record.key.clone(),
                Held {
                    version: record.version,
                    value: record.value.clone(),
                    at,
                },
            );
        }
        self.bytes += record.value.as_ref().map_or(0, Bytes::len);
        let new = mix(&record.key, record.version);
        self.digests[bucket] = self.digests[bucket].wrapping_add(new);
        true
    }

    /// Forgets the tombstones written before `physical` ticks (garbage collection after the
    /// grace period) and applied at or before `applied_through` (so a state machine restored
    /// from its snapshot never holds a value whose tombstone is gone). Returns how many went.
    pub fn collect_tombstones(&mut self, physical: u64, applied_through: LogIndex) -> usize {
        let old: Vec<Bytes> = self
            .map
            .iter()
            .filter(|(_, held)| {
                held.value.is_none()
                    && held.version.physical() < physical
                    && held.at <= applied_through
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &old {
            if let Some(held) = self.map.remove(key) {
                let bucket = bucket_of(key);
                self.digests[bucket] = self.digests[bucket].wrapping_sub(mix(key, held.version));
                self.by_bucket.remove(&(bucket as u16, key.clone()));
                self.bytes -= key.len();
            }
        }
        old.len()
    }

    /// The record held for `key`.
    pub fn record(&self, key: &Bytes) -> Option<Record> {
        self.map.get(key).map(|held| Record {
            key: key.clone(),
            version: held.version,
            value: held.value.clone(),
        })
    }

    /// Every record in `span`, tombstones included, in key order.
    pub fn span(&self, span: &KeySpan) -> Vec<Record> {
        if span.range_end.is_empty() {
            return self.record(&span.key).into_iter().collect();
        }
        self.map
            .range(span.key.clone()..)
            .take_while(|(key, _)| span.contains(key))
            .map(|(key, held)| Record {
                key: key.clone(),
                version: held.version,
                value: held.value.clone(),
            })
            .collect()
    }

    /// The records in `span` in key order, stopping once they pass `bytes_max` bytes;
    /// whether it stopped early.
    pub fn span_limited(&self, span: &KeySpan, bytes_max: usize) -> (Vec<Record>, bool) {
        if span.range_end.is_empty() {
            return (self.record(&span.key).into_iter().collect(), false);
        }
        let mut records = Vec::new();
        let mut bytes = 0;
        for (key, held) in self.map.range(span.key.clone()..) {
            if !span.contains(key) {
                break;
            }
            let record = Record {
                key: key.clone(),
                version: held.version,
                value: held.value.clone(),
            };
            bytes += record.size_bytes();
            if bytes > bytes_max {
                return (records, true);
            }
            records.push(record);
        }
        (records, false)
    }

    /// Keys with a value (not deleted) in `span`, in key order.
    pub fn live_keys(&self, span: &KeySpan) -> Vec<Bytes> {
        self.span(span)
            .into_iter()
            .filter(|r| r.value.is_some())
            .map(|r| r.key)
            .collect()
    }

    /// The digest of every bucket.
    pub fn digests(&self) -> &[u64] {
        &self.digests
    }

    /// The keys of `bucket` and their versions.
    pub fn bucket(&self, bucket: u16) -> Vec<(Bytes, Version)> {
        self.by_bucket
            .range((bucket, Bytes::new())..)
            .take_while(|(b, _)| *b == bucket)
            .filter_map(|(_, key)| self.map.get(key).map(|h| (key.clone(), h.version)))
            .collect()
    }

    /// Keys held (tombstones included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// One number for the whole store: two stores that hold the same versions of the same
    /// keys have the same fingerprint.
    pub fn fingerprint(&self) -> u64 {
        self.digests.iter().enumerate().fold(0u64, |acc, (i, d)| {
            acc.wrapping_add(splitmix(*d ^ (i as u64).wrapping_mul(0x9e37_79b9)))
        })
    }

    /// The newest version held of any key.
    pub fn newest(&self) -> Version {
        self.map
            .values()
            .map(|h| h.version)
            .max()
            .unwrap_or(Version::ZERO)
    }

    /// Every key held, with what is held of it, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Held)> {
        self.map.iter()
    }

    /// Appends the whole store: count, then each key, version, value and index.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.map.len() as u64);
        for (key, held) in &self.map {
            Record {
                key: key.clone(),
                version: held.version,
                value: held.value.clone(),
            }
            .encode(enc);
            enc.u64(held.at);
        }
    }

    /// Reads what [`Store::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Store, DecodeError> {
        let mut store = Store::default();
        let count = dec.count("keys")?;
        for _ in 0..count {
            let record = Record::decode(dec)?;
            let at = dec.u64("applied at")?;
            store.merge(&record, at);
        }
        Ok(store)
    }
}

/// The bucket `key` falls in.
pub fn bucket_of(key: &[u8]) -> usize {
    (fnv1a(key) % BUCKETS as u64) as usize
}

/// FNV-1a, 64 bits: stable across builds and machines, as digests compared between nodes
/// must be.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A well-spread hash of one (key, version) pair.
fn mix(key: &[u8], version: Version) -> u64 {
    splitmix(fnv1a(key) ^ version.0.rotate_left(29))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::NodeId;

    fn record(key: &str, clock: u64, node: u64, value: Option<&str>) -> Record {
        Record {
            key: Bytes::copy_from_slice(key.as_bytes()),
            version: Version::new(clock, NodeId(node)),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        }
    }

    #[test]
    fn the_newest_version_wins_whatever_the_order_of_arrival() {
        let writes = [
            record("k", 5, 1, Some("a")),
            record("k", 7, 2, None),
            record("k", 7, 1, Some("b")),
            record("j", 1, 3, Some("c")),
        ];
        let mut forward = Store::default();
        let mut backward = Store::default();
        for (i, r) in writes.iter().enumerate() {
            forward.merge(r, i as u64 + 1);
        }
        for (i, r) in writes.iter().rev().enumerate() {
            backward.merge(r, i as u64 + 1);
        }
        // (7, n2) beats (7, n1): the tombstone wins.
        assert_eq!(forward.get(b"k").map(|h| h.value.clone()), Some(None));
        assert_eq!(forward.fingerprint(), backward.fingerprint());
        assert_eq!(forward.digests(), backward.digests());
        assert!(
            !forward.merge(&writes[0], 9),
            "an older version is not taken"
        );
    }

    #[test]
    fn digests_differ_exactly_in_the_buckets_that_differ() {
        let mut a = Store::default();
        let mut b = Store::default();
        for i in 0..100u64 {
            let r = record(&format!("key{i}"), i + 1, 1, Some("v"));
            a.merge(&r, i + 1);
            b.merge(&r, i + 1);
        }
        let newer = record("key42", 1000, 2, Some("w"));
        b.merge(&newer, 101);
        let differing: Vec<usize> = (0..BUCKETS)
            .filter(|&i| a.digests()[i] != b.digests()[i])
            .collect();
        assert_eq!(differing, vec![bucket_of(b"key42")]);
        let keys = b.bucket(bucket_of(b"key42") as u16);
        assert!(keys.contains(&(newer.key.clone(), newer.version)));
    }

    #[test]
    fn spans_tombstone_collection_and_encoding() {
        let mut s = Store::default();
        s.merge(&record("a", 1 << 16, 1, Some("1")), 1);
        s.merge(&record("b", 2 << 16, 1, None), 2);
        s.merge(&record("c", 9 << 16, 1, None), 3);
        s.merge(&record("d", 3 << 16, 1, Some("4")), 4);
        let span = KeySpan {
            key: Bytes::from_static(b"b"),
            range_end: Bytes::from_static(b"d"),
        };
        assert_eq!(s.span(&span).len(), 2);
        assert_eq!(
            s.live_keys(&KeySpan::all()),
            vec![Bytes::from("a"), Bytes::from("d")]
        );
        let mut enc = Encoder::new();
        s.encode(&mut enc);
        let bytes = enc.finish();
        let decoded = Store::decode(&mut Decoder::new(&bytes)).expect("decodes");
        assert_eq!(decoded.fingerprint(), s.fingerprint());
        assert_eq!(s.collect_tombstones(5, 1), 0, "not yet in a snapshot");
        assert_eq!(s.collect_tombstones(5, 4), 1, "only the old tombstone goes");
        assert!(s.get(b"b").is_none() && s.get(b"c").is_some());
        assert_eq!(
            s.bucket(bucket_of(b"b") as u16)
                .iter()
                .filter(|(k, _)| k == "b")
                .count(),
            0
        );
    }
}
