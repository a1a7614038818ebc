//! The snapshot store contract, and snapshots as checksummed files.

use bytes::Bytes;
use synod_core::codec::{Decoder, Encoder};
use synod_core::{Snapshot, SnapshotMeta};

use crate::dir::Dir;
use crate::error::{Result, StorageError};
use crate::record::{self, Found};

/// Durable snapshots of the state machine.
pub trait SnapshotStore {
    /// Stores a snapshot. When it returns the snapshot is durable and whole: a crash during
    /// `save` leaves the store as it was before. Keeps the newest few and deletes older ones.
    fn save(&mut self, snapshot: &Snapshot) -> Result<()>;

    /// The newest snapshot, checked against its checksums. A damaged newest snapshot is an
    /// error, never silently replaced by an older one (the log after it may be gone).
    fn latest(&self) -> Result<Option<Snapshot>>;

    /// What is stored, oldest first.
    fn list(&self) -> Result<Vec<SnapshotMeta>>;

    /// Deletes one snapshot. Durable when it returns.
    fn delete(&mut self, meta: SnapshotMeta) -> Result<()>;
}

/// The record kind of a snapshot file's single record.
const KIND_SNAPSHOT: u8 = 16;
const MAGIC: &[u8; 8] = b"SYNODSNP";
const VERSION: u64 = 1;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// Snapshots stored one per file: `<index>-<era>.snap`, a single checksummed record.
#[derive(Debug)]
pub struct FileSnapshots<D: Dir> {
    dir: D,
    retain: usize,
}

fn file_name(meta: SnapshotMeta) -> String {
    format!("{:020}-{:020}{SUFFIX}", meta.index, meta.era)
}

fn parse_name(name: &str) -> Option<SnapshotMeta> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (index, era) = stem.split_once('-')?;
    Some(SnapshotMeta {
        index: index.parse().ok()?,
        era: era.parse().ok()?,
    })
}

impl<D: Dir> FileSnapshots<D> {
    /// Opens the store, removing temporary files a crash during `save` left behind. Keeps the
    /// newest `retain` snapshots.
    pub fn open(mut dir: D, retain: usize) -> Result<FileSnapshots<D>> {
        let leftovers: Vec<String> = dir
            .list()?
            .into_iter()
            .filter(|n| n.ends_with(TEMP_SUFFIX))
            .collect();
        for name in &leftovers {
            dir.remove(name)?;
        }
        if !leftovers.is_empty() {
            dir.sync_dir()?;
        }
        Ok(FileSnapshots {
            dir,
            retain: retain.max(1),
        })
    }

    /// The directory back, for the simulator to crash it.
    pub fn into_dir(self) -> D {
        self.dir
    }

    /// Reads and checks one snapshot file.
    pub fn read(&self, meta: SnapshotMeta) -> Result<Snapshot> {
        let name = file_name(meta);
        let bytes = self.dir.read(&name)?;
        decode(&bytes, meta).map_err(|(offset, reason)| StorageError::Corrupt {
            file: self.dir.describe(&name),
            offset,
            reason,
        })
    }
}

fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut fields = Encoder::with_capacity(snapshot.data.len() + 32);
    fields
        .u64(VERSION)
        .u64(snapshot.meta.index)
        .u64(snapshot.meta.era)
        .bytes(&snapshot.data);
    let mut body = MAGIC.to_vec();
    body.extend_from_slice(&fields.finish());
    let mut out = Vec::with_capacity(body.len() + record::HEADER_BYTES);
    record::encode(KIND_SNAPSHOT, &body, &mut out);
    out
}

fn decode(bytes: &[u8], expected: SnapshotMeta) -> std::result::Result<Snapshot, (u64, String)> {
    let (payload, size) = match record::read(bytes) {
        Found::Record {
            kind: KIND_SNAPSHOT,
            payload,
            size,
        } => (payload, size),
        Found::Record { kind, .. } => {
            return Err((0, format!("record kind {kind} is not a snapshot")))
        }
        Found::End => return Err((0, "empty snapshot file".to_string())),
        Found::Torn(reason) | Found::Corrupt(reason) => return Err((0, reason.to_string())),
    };
    if size != bytes.len() {
        return Err((size as u64, "bytes after the snapshot record".to_string()));
    }
    let header = record::HEADER_BYTES as u64;
    if !payload.starts_with(MAGIC) {
        return Err((header, "not a Synod snapshot".to_string()));
    }
    let mut dec = Decoder::new(&payload[MAGIC.len()..]);
    let fields = (|| {
        let version = dec.u64("version")?;
        let index = dec.u64("index")?;
        let era = dec.u64("era")?;
        let data = Bytes::copy_from_slice(dec.bytes("data")?);
        Ok::<_, synod_core::codec::DecodeError>((version, SnapshotMeta { index, era }, data))
    })();
    let (version, meta, data) = fields.map_err(|e| (header, e.to_string()))?;
    if version != VERSION {
        return Err((
            header,
            format!("snapshot format version {version} is not supported"),
        ));
    }
    if meta != expected {
        return Err((
            header,
            format!("holds {meta:?} but is named for {expected:?}"),
        ));
    }
    Ok(Snapshot { meta, data })
}

impl<D: Dir> SnapshotStore for FileSnapshots<D> {
    fn save(&mut self, snapshot: &Snapshot) -> Result<()> {
        let name = file_name(snapshot.meta);
        let temp = format!("{name}.tmp");
        self.dir.create(&temp)?;
        self.dir.append(&temp, &encode(snapshot))?;
        self.dir.sync(&temp)?;
        self.dir.rename(&temp, &name)?;
        self.dir.sync_dir()?;
        let stored = self.list()?;
        let excess = stored.len().saturating_sub(self.retain);
        for old in &stored[..excess] {
            self.dir.remove(&file_name(*old))?;
        }
        if excess > 0 {
            self.dir.sync_dir()?;
        }
        Ok(())
    }

    fn latest(&self) -> Result<Option<Snapshot>> {
        match self.list()?.last() {
            Some(&meta) => self.read(meta).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>> {
        let mut metas: Vec<SnapshotMeta> = self
            .dir
            .list()?
            .iter()
            .filter_map(|n| parse_name(n))
            .collect();
        metas.sort();
        Ok(metas)
    }

    fn delete(&mut self, meta: SnapshotMeta) -> Result<()> {
        self.dir.remove(&file_name(meta))?;
        self.dir.sync_dir()
    }
}
