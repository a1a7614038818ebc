//! The snapshot store contract, and snapshots as checksummed files.

use std::io::Read;

use bytes::Bytes;
use synod_core::codec::{Decoder, Encoder};
use synod_core::{Membership, Snapshot, SnapshotMeta};

use crate::dir::Dir;
use crate::error::{Result, StorageError};
use crate::record;

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

/// The record kind of a version 1 snapshot file's single record (read, no longer written).
const KIND_SNAPSHOT_V1: u8 = 16;
/// The first record of a snapshot file: what it covers and how long its data is.
const KIND_SNAPSHOT_HEADER: u8 = 17;
/// One piece of the state machine's data.
const KIND_SNAPSHOT_CHUNK: u8 = 18;
const MAGIC: &[u8; 8] = b"SYNODSNP";
/// Version 3 adds the membership to the header; version 2 files (without it) are read.
const VERSION: u64 = 3;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// Bytes of data per chunk record by default: a snapshot of any size is written and read
/// one bounded piece at a time, never framed as one record.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A snapshot being written is synced every this many bytes.
const SYNC_EVERY_BYTES: usize = 8 << 20;

/// Snapshots stored one per file, `<index>-<era>.snap`: a header record, then the data in
/// checksummed chunk records.
#[derive(Debug)]
pub struct FileSnapshots<D: Dir> {
    dir: D,
    retain: usize,
    chunk_bytes: usize,
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
    /// Opens the store, removing temporary files a crash during `save` left behind and making
    /// the names of the snapshots it holds durable. Keeps the newest `retain` snapshots.
    pub fn open(mut dir: D, retain: usize) -> Result<FileSnapshots<D>> {
        let leftovers: Vec<String> = dir
            .list()?
            .into_iter()
            .filter(|n| n.ends_with(TEMP_SUFFIX))
            .collect();
        for name in &leftovers {
            dir.remove(name)?;
        }
        // A snapshot renamed into place by a life killed before it synced the directory is
        // read from now on (the log is compacted through it): its name must outlast a power
        // loss. (Its data was synced before the rename.)
        dir.sync_dir()?;
        Ok(FileSnapshots::read_only(dir, retain))
    }

    /// The store as it is, changing nothing (for `synod wal check`).
    pub fn read_only(dir: D, retain: usize) -> FileSnapshots<D> {
        FileSnapshots {
            dir,
            retain: retain.max(1),
            chunk_bytes: SNAPSHOT_CHUNK_BYTES,
        }
    }

    /// Writes data in chunks of at most `chunk_bytes` (the simulator uses small ones so that
    /// every snapshot crosses chunk boundaries).
    pub fn with_chunk_bytes(mut self, chunk_bytes: usize) -> FileSnapshots<D> {
        self.chunk_bytes = chunk_bytes.max(1);
        self
    }

    /// The directory back, for the simulator to crash it.
    pub fn into_dir(self) -> D {
        self.dir
    }

    /// Reads and checks one snapshot file, one record at a time: the data is held once.
    pub fn read(&self, meta: SnapshotMeta) -> Result<Snapshot> {
        let name = file_name(meta);
        let mut reader = RecordReader {
            input: self.dir.open_read(&name)?,
            offset: 0,
            len: self.dir.len(&name)?,
            file: self.dir.describe(&name),
        };
        let snapshot = match reader.next()? {
            Some((KIND_SNAPSHOT_HEADER, header)) => read_chunked(&mut reader, &header, meta)?,
            Some((KIND_SNAPSHOT_V1, record)) => {
                decode_v1(&record, meta).map_err(|r| reader.corrupt(r))?
            }
            Some((kind, _)) => {
                return Err(reader.corrupt(format!("record kind {kind} is not a snapshot")))
            }
            None => return Err(reader.corrupt("empty snapshot file".to_string())),
        };
        if reader.next()?.is_some() {
            return Err(reader.corrupt("records after the snapshot's data".to_string()));
        }
        Ok(snapshot)
    }

    /// Writes `snapshot` to the file `name`, a bounded chunk at a time.
    fn write(&mut self, name: &str, snapshot: &Snapshot) -> Result<()> {
        let data = &snapshot.data;
        let chunks = data.len().div_ceil(self.chunk_bytes);
        let mut header = Encoder::with_capacity(64);
        header
            .bytes(MAGIC)
            .u64(VERSION)
            .u64(snapshot.meta.index)
            .u64(snapshot.meta.era)
            .u64(data.len() as u64)
            .u64(chunks as u64)
            .bool(snapshot.membership.is_some());
        if let Some(membership) = &snapshot.membership {
            membership.encode(&mut header);
        }
        let mut framed = Vec::with_capacity(self.chunk_bytes.min(data.len()) + 64);
        record::encode(KIND_SNAPSHOT_HEADER, &header.finish(), &mut framed);
        self.dir.append(name, &framed)?;
        let mut unsynced = 0;
        for chunk in data.chunks(self.chunk_bytes) {
            framed.clear();
            record::encode(KIND_SNAPSHOT_CHUNK, chunk, &mut framed);
            self.dir.append(name, &framed)?;
            // Synced as it goes: a gigabyte left dirty in the page cache is written back in
            // one burst (at the final fdatasync, or when the kernel's flusher gets to it),
            // and the log's fdatasyncs on the same disk queue behind it.
            unsynced += framed.len();
            if unsynced >= SYNC_EVERY_BYTES {
                self.dir.sync(name)?;
                unsynced = 0;
            }
        }
        Ok(())
    }
}

/// Reads a file's records one at a time from a stream; any damage is corruption (a snapshot
/// file is whole once renamed into place, so nothing in it can be a torn write).
struct RecordReader<'a> {
    input: Box<dyn Read + 'a>,
    offset: u64,
    /// The file's length: nothing is allocated for more than what is left of it.
    len: u64,
    file: String,
}

impl RecordReader<'_> {
    fn corrupt(&self, reason: String) -> StorageError {
        StorageError::Corrupt {
            file: self.file.clone(),
            offset: self.offset,
            reason,
        }
    }

    /// Reads the next record: its kind and payload, or `None` at the end of the file.
    fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut header = [0u8; record::HEADER_BYTES];
        let got = read_full(&mut self.input, &mut header).map_err(|e| self.io(e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < header.len() {
            return Err(self.corrupt("record header cut short".to_string()));
        }
        let (kind, len) = record::header(&header).map_err(|r| self.corrupt(r.to_string()))?;
        if (record::HEADER_BYTES + len) as u64 > self.left() {
            return Err(self.corrupt("record cut short".to_string()));
        }
        let mut payload = vec![0; len];
        if read_full(&mut self.input, &mut payload).map_err(|e| self.io(e))? < len {
            return Err(self.corrupt("record cut short".to_string()));
        }
        if !record::payload_matches(&header, &payload) {
            return Err(self.corrupt("record payload checksum mismatch".to_string()));
        }
        self.offset += (record::HEADER_BYTES + len) as u64;
        Ok(Some((kind, payload)))
    }

    /// Bytes of the file after the current record's start.
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.offset)
    }

    fn io(&self, e: std::io::Error) -> StorageError {
        StorageError::io("read", self.file.clone(), e)
    }
}

/// Fills `buf` as far as the input goes; returns how much it filled.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The chunks after a version 2 or 3 header, gathered into the data they make up.
fn read_chunked(
    reader: &mut RecordReader<'_>,
    header: &[u8],
    expected: SnapshotMeta,
) -> Result<Snapshot> {
    let fields = (|| {
        let mut dec = Decoder::new(header);
        if dec.bytes("magic")? != MAGIC {
            return Ok(None);
        }
        let version = dec.u64("version")?;
        let meta = SnapshotMeta {
            index: dec.u64("index")?,
            era: dec.u64("era")?,
        };
        let (len, chunks) = (dec.u64("data length")?, dec.u64("chunk count")?);
        let membership = if version >= 3 && dec.bool("has membership")? {
            Some(Membership::decode(&mut dec)?)
        } else {
            None
        };
        dec.finish()?;
        Ok::<_, synod_core::codec::DecodeError>(Some((version, meta, len, chunks, membership)))
    })();
    let (version, meta, len, chunks, membership) = match fields {
        Ok(Some(fields)) => fields,
        Ok(None) => return Err(reader.corrupt("not a Synod snapshot".to_string())),
        Err(e) => return Err(reader.corrupt(e.to_string())),
    };
    if !(2..=VERSION).contains(&version) {
        let reason = format!("snapshot format version {version} is not supported");
        return Err(reader.corrupt(reason));
    }
    check_meta(meta, expected).map_err(|r| reader.corrupt(r))?;
    let mut data: Vec<u8> = Vec::new();
    for _ in 0..chunks {
        match reader.next()? {
            Some((KIND_SNAPSHOT_CHUNK, chunk)) => {
                if (data.len() + chunk.len()) as u64 > len {
                    return Err(reader.corrupt("more data than the header says".to_string()));
                }
                if data.is_empty() {
                    // Room for the whole, once: no growth by doubling, no second copy (and never
                    // more than the file could hold).
                    let room = len.min(reader.left() + chunk.len() as u64);
                    data.reserve_exact(room as usize);
                }
                data.extend_from_slice(&chunk);
            }
            Some((kind, _)) => {
                return Err(reader.corrupt(format!("record kind {kind} inside a snapshot")))
            }
            None => return Err(reader.corrupt("snapshot file cut short".to_string())),
        }
    }
    if data.len() as u64 != len {
        let reason = format!("{} bytes of data where the header says {len}", data.len());
        return Err(reader.corrupt(reason));
    }
    Ok(Snapshot {
        meta,
        membership,
        data: Bytes::from(data),
    })
}

fn check_meta(meta: SnapshotMeta, expected: SnapshotMeta) -> std::result::Result<(), String> {
    if meta != expected {
        return Err(format!("holds {meta:?} but is named for {expected:?}"));
    }
    Ok(())
}

/// A version 1 file: one record holding everything.
fn decode_v1(payload: &[u8], expected: SnapshotMeta) -> std::result::Result<Snapshot, String> {
    if !payload.starts_with(MAGIC) {
        return Err("not a Synod snapshot".to_string());
    }
    let mut dec = Decoder::new(&payload[MAGIC.len()..]);
    let fields = (|| {
        let version = dec.u64("version")?;
        let index = dec.u64("index")?;
        let era = dec.u64("era")?;
        let data = Bytes::copy_from_slice(dec.bytes("data")?);
        Ok::<_, synod_core::codec::DecodeError>((version, SnapshotMeta { index, era }, data))
    })();
    let (version, meta, data) = fields.map_err(|e| e.to_string())?;
    if dec.remaining() > 0 {
        return Err(format!(
            "{} bytes after the snapshot's data",
            dec.remaining()
        ));
    }
    if version != 1 {
        return Err(format!(
            "snapshot format version {version} is not supported"
        ));
    }
    check_meta(meta, expected)?;
    Ok(Snapshot {
        meta,
        membership: None,
        data,
    })
}

impl<D: Dir> SnapshotStore for FileSnapshots<D> {
    fn save(&mut self, snapshot: &Snapshot) -> Result<()> {
        let name = file_name(snapshot.meta);
        let temp = format!("{name}.tmp");
        self.dir.create(&temp)?;
        self.write(&temp, snapshot)?;
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
