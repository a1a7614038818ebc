//! The file log: a write-ahead log in numbered segment files.
//!
//! Every change is a framed, checksummed record appended to the active segment: entries,
//! truncations, hard states, the engine's journal records and compaction bases. Recovery
//! replays the records in order, so nothing written is ever rewritten and a crash mid-write
//! leaves a prefix of the records (a hard state is either the old one or the new one). `sync`
//! writes all staged records with one `write` and one `fdatasync` (group commit).
//!
//! A segment's space is allocated when it is created (`fallocate`, where the file system can),
//! and records are written into it in place: a write that does not grow the file spares
//! `fdatasync` the file's new length (on ext4 here, 96-101 us instead of 146-152 us per sync;
//! marking allocated blocks written is still metadata, but less). The unwritten rest of the active segment reads as zeros. A segment
//! that reaches the size limit is cut to what was written, durably, and sealed, and a new one
//! started, beginning with the current hard state and the journal records since it (restated in
//! one record, so a crash leaves all of it or none) and the base, so that sealed segments wholly
//! covered by a snapshot can be deleted.
//!
//! On open every segment is checked. In the last segment, zeros after the last record are
//! space not yet written (or writes that never reached the disk, which were never
//! acknowledged either); writing goes on there. A record cut short, or a record in which a
//! disk sector reads back as zeros, is a write that never completed (so was never
//! acknowledged): it is cut off, with everything after it, and reported in
//! [`LogState::repairs`]. Any other damage (a checksum failure without that mark, anything
//! wrong in a sealed segment, a missing segment) is an error naming the file and the offset.
//!
//! That mark needs two rules of the writer, and a write that would break either is followed
//! by a pad record running to the end of its sector:
//! - A record that ends a few bytes into a sector, with zeros there, followed by unwritten
//!   space, would read as a record with a zeroed sector: a flipped bit anywhere in it would
//!   pass for a torn write and a written, acknowledged record would be cut off.
//! - A write must not end within [`record::ZERO_RUN_BYTES_MIN`] bytes of a sector's end: the
//!   next would start there, and if a crash lost the sector its first header lies in while a
//!   later sector of it reached the disk, the zeros there would be too few to tell from damage,
//!   and the member would refuse to start over a write it never acknowledged.

use std::sync::Arc;

use synod_core::codec::{DecodeError, Decoder};
use synod_core::{Entry, LogIndex, SnapshotMeta};

use crate::bugs::InjectedBugs;
use crate::dir::Dir;
use crate::error::{Result, StorageError};
use crate::log::{LogState, LogStore};
use crate::record::{self, Found};

/// File log settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Rules broken on purpose, in test builds only.
    pub bugs: InjectedBugs,
}

impl WalOptions {
    /// Segments of `segment_bytes`, everything else as by default.
    pub const fn with_segment_bytes(segment_bytes: u64) -> WalOptions {
        WalOptions {
            segment_bytes,
            bugs: InjectedBugs::NONE,
        }
    }
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions::with_segment_bytes(64 << 20)
    }
}

const KIND_SEGMENT: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_HARD_STATE: u8 = 4;
const KIND_BASE: u8 = 5;
const KIND_JOURNAL: u8 = 6;
const KIND_RESTATE: u8 = 7;
const KIND_PAD: u8 = 8;
const MAGIC: &[u8; 8] = b"SYNODWAL";
/// Version 2 adds pad records of one byte; version 3 pads run to a sector's end. Segments of
/// every version still read.
const VERSION: u64 = 3;
const VERSIONS_READ: std::ops::RangeInclusive<u64> = 1..=VERSION;
/// What a pad record's payload is made of: a byte that is not zero.
const PAD_BYTE: u8 = 0xff;
const SUFFIX: &str = ".wal";

fn segment_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(SUFFIX)?.parse().ok()
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The first record of every segment.
    Segment {
        /// The segment's sequence number.
        seq: u64,
    },
    /// A log entry.
    Entry(Entry),
    /// Entries at this index or later are removed.
    Truncate(LogIndex),
    /// The engine's hard state.
    HardState(Vec<u8>),
    /// A record of the engine's journal.
    Journal(Vec<u8>),
    /// The hard state and the journal since it, restated at the start of a segment: one
    /// record, so that a crash while the segment is created keeps all of it or none (a torn
    /// restatement replayed in part would discard journal records that the sealed segment
    /// before it holds).
    Restate {
        /// The hard state, if one was ever saved.
        hard_state: Option<Vec<u8>>,
        /// The journal records after it.
        journal: Vec<Vec<u8>>,
    },
    /// Entries through this position are covered by a snapshot.
    Base(SnapshotMeta),
    /// Nothing: written after a record that would otherwise end the log with a few zero bytes
    /// in a sector (see the module's notes).
    Pad,
}

/// Follows `batch`, to be written at byte `at` of a segment, with the pad record it needs, if
/// any (see [`pad_after`]). The bytes of the sector it ends in from before the batch need no
/// look: if the batch starts in that sector, its first record's header is there too, and a
/// header is never all zeros.
fn pad_tail(batch: &mut Vec<u8>, at: u64) {
    let end = at + batch.len() as u64;
    let in_last_sector = (end % record::SECTOR_BYTES as u64) as usize;
    let tail = &batch[batch.len().saturating_sub(in_last_sector)..];
    if let Some(pad) = pad_after(end, tail) {
        batch.extend_from_slice(&pad);
    }
}

/// The pad record to write after records that end at byte `end` of a segment, if the writer's
/// rules ask for one (see the module's notes): when their `tail` (their last bytes in the
/// sector `end` falls in) is all zeros, or when fewer than [`record::ZERO_RUN_BYTES_MIN`] bytes
/// of that sector are left. The pad runs to the end of that sector, or of the next when what
/// is left cannot hold a record.
fn pad_after(end: u64, tail: &[u8]) -> Option<Vec<u8>> {
    let into_sector = (end % record::SECTOR_BYTES as u64) as usize;
    if into_sector == 0 {
        return None;
    }
    let left = record::SECTOR_BYTES - into_sector;
    if left >= record::ZERO_RUN_BYTES_MIN && tail.iter().any(|&b| b != 0) {
        return None;
    }
    let mut size = left;
    if size <= record::HEADER_BYTES {
        size += record::SECTOR_BYTES;
    }
    let mut pad = Vec::with_capacity(size);
    record::encode(
        KIND_PAD,
        &vec![PAD_BYTE; size - record::HEADER_BYTES],
        &mut pad,
    );
    Some(pad)
}

/// Frames an entry record straight from a borrowed entry (the hot path of every append).
fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    record::encode_with(KIND_ENTRY, out, |enc| e.encode(enc));
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Segment { seq } => record::encode_with(KIND_SEGMENT, out, |enc| {
                enc.bytes(MAGIC).u64(VERSION).u64(*seq);
            }),
            Record::Entry(e) => encode_entry(e, out),
            Record::Truncate(index) => record::encode_with(KIND_TRUNCATE, out, |enc| {
                enc.u64(*index);
            }),
            Record::HardState(bytes) => record::encode_with(KIND_HARD_STATE, out, |enc| {
                enc.bytes(bytes);
            }),
            Record::Journal(bytes) => record::encode_with(KIND_JOURNAL, out, |enc| {
                enc.bytes(bytes);
            }),
            Record::Restate {
                hard_state,
                journal,
            } => record::encode_with(KIND_RESTATE, out, |enc| {
                match hard_state {
                    None => enc.u8(0),
                    Some(h) => enc.u8(1).bytes(h),
                };
                enc.u64(journal.len() as u64);
                for r in journal {
                    enc.bytes(r);
                }
            }),
            Record::Base(meta) => record::encode_with(KIND_BASE, out, |enc| {
                enc.u64(meta.index).u64(meta.era);
            }),
            Record::Pad => record::encode(KIND_PAD, &[PAD_BYTE], out),
        }
    }

    fn decode(kind: u8, payload: &[u8]) -> std::result::Result<Record, DecodeError> {
        let mut dec = Decoder::new(payload);
        let record = match kind {
            KIND_SEGMENT => {
                let magic = dec.bytes("magic")?;
                let version = dec.u64("version")?;
                if magic != MAGIC || !VERSIONS_READ.contains(&version) {
                    return Err(DecodeError::UnknownTag {
                        what: "segment format",
                        tag: version,
                        offset: 0,
                    });
                }
                Record::Segment {
                    seq: dec.u64("seq")?,
                }
            }
            KIND_ENTRY => Record::Entry(Entry::decode(&mut dec)?),
            KIND_TRUNCATE => Record::Truncate(dec.u64("index")?),
            KIND_HARD_STATE => Record::HardState(dec.bytes("hard state")?.to_vec()),
            KIND_JOURNAL => Record::Journal(dec.bytes("journal record")?.to_vec()),
            KIND_RESTATE => {
                let hard_state = match dec.tag("restated hard state", 2)? {
                    0 => None,
                    _ => Some(dec.bytes("hard state")?.to_vec()),
                };
                let journal = (0..dec.count("journal records")?)
                    .map(|_| dec.bytes("journal record").map(<[u8]>::to_vec))
                    .collect::<std::result::Result<_, _>>()?;
                Record::Restate {
                    hard_state,
                    journal,
                }
            }
            KIND_BASE => Record::Base(SnapshotMeta {
                index: dec.u64("index")?,
                era: dec.u64("era")?,
            }),
            KIND_PAD => {
                // One byte or more (version 2 wrote one).
                dec.u8("pad")?;
                while dec.remaining() > 0 {
                    dec.u8("pad")?;
                }
                Record::Pad
            }
            other => {
                return Err(DecodeError::UnknownTag {
                    what: "record kind",
                    tag: u64::from(other),
                    offset: 0,
                })
            }
        };
        dec.finish()?;
        Ok(record)
    }
}

/// A record with where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The segment file's name (one allocation shared by its records).
    pub file: Arc<str>,
    /// Byte offset in it.
    pub offset: u64,
    /// Its length in bytes, framing included.
    pub size: u64,
    /// The record.
    pub record: Record,
}

/// What a read-only scan of a log directory found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every intact record, in log order.
    pub records: Vec<Located>,
    /// A torn write at the end of the last segment.
    pub torn_tail: Option<TornTail>,
    /// Zero bytes after the last record of the last segment: space allocated ahead of the
    /// writes (or writes that never reached the disk).
    pub unwritten_bytes: u64,
}

/// A write a crash cut short, found at the end of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file's name.
    pub file: String,
    /// Where the torn write starts: everything from here on is cut off.
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// What it looks like.
    pub what: &'static str,
}

impl std::fmt::Display for TornTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "torn write ({}): {} bytes from byte {} of {}",
            self.what, self.bytes, self.offset, self.file
        )
    }
}

/// Reads and checks every segment without changing anything (for `synod wal check` and
/// `dump`, and the first step of opening).
pub fn scan<D: Dir>(dir: &D) -> Result<Scan> {
    Ok(scan_with(dir, &WalOptions::default())?.0)
}

/// The bytes of a segment's last sector, up to where its records end (empty when they end on
/// a sector boundary).
#[derive(Debug)]
struct SectorTail {
    file: String,
    bytes: Vec<u8>,
}

impl SectorTail {
    fn of(file: &str, segment: &[u8], end: usize) -> SectorTail {
        SectorTail {
            file: file.to_string(),
            bytes: segment[end - end % record::SECTOR_BYTES..end].to_vec(),
        }
    }

    /// The pad record that must follow these records before anything is written after them,
    /// if the writer's rules ask for one (see the module's notes).
    fn pad(&self) -> Option<Vec<u8>> {
        pad_after(self.bytes.len() as u64, &self.bytes)
    }
}

/// A record of the last segment that fails its checks: a torn write, or damage?
fn torn_in_last_segment(bytes: &[u8], offset: usize, options: &WalOptions) -> bool {
    #[cfg(feature = "inject-bugs")]
    if options.bugs.torn_write_only_as_a_clean_cut {
        return false;
    }
    let _ = options;
    record::torn_write_evidence(bytes, offset)
}

/// Scans the log, and says how each segment's last sector ends.
fn scan_with<D: Dir>(dir: &D, options: &WalOptions) -> Result<(Scan, Vec<SectorTail>)> {
    let mut seqs: Vec<u64> = dir
        .list()?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    seqs.sort_unstable();
    if let Some(gap) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(StorageError::MissingSegment {
            dir: dir.describe(""),
            missing: gap[0] + 1,
            before: gap[0],
            after: gap[1],
        });
    }
    let mut scan = Scan::default();
    let mut tails = Vec::with_capacity(seqs.len());
    for (position, &seq) in seqs.iter().enumerate() {
        let last = position + 1 == seqs.len();
        let name = segment_name(seq);
        let file: Arc<str> = Arc::from(name.as_str());
        let bytes = dir.read(&name)?;
        let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
            file: dir.describe(&name),
            offset: offset as u64,
            reason,
        };
        let torn = |offset: usize, what| TornTail {
            file: name.clone(),
            offset: offset as u64,
            bytes: (bytes.len() - offset) as u64,
            what,
        };
        let mut offset = 0usize;
        loop {
            match record::read(&bytes[offset..]) {
                // A segment created, but whose header never reached the disk (nor, maybe,
                // its allocation).
                Found::End if last && offset == 0 => {
                    scan.torn_tail = Some(torn(offset, "an empty segment"));
                    break;
                }
                Found::End if offset == 0 => {
                    return Err(corrupt(offset, "an empty sealed segment".into()))
                }
                Found::End => break,
                Found::Zeros if last && offset == 0 => {
                    scan.torn_tail = Some(torn(offset, "a segment of zeros"));
                    break;
                }
                Found::Zeros if last => {
                    scan.unwritten_bytes = (bytes.len() - offset) as u64;
                    break;
                }
                Found::Zeros => {
                    return Err(corrupt(
                        offset,
                        "zeros at the end of a sealed segment".into(),
                    ))
                }
                Found::Torn(what) if last => {
                    scan.torn_tail = Some(torn(offset, what));
                    break;
                }
                Found::Torn(what) => {
                    return Err(corrupt(offset, format!("{what} in a sealed segment")))
                }
                Found::Corrupt(_) if last && torn_in_last_segment(&bytes, offset, options) => {
                    scan.torn_tail = Some(torn(offset, "a record with a zeroed sector"));
                    break;
                }
                Found::Corrupt(what) => return Err(corrupt(offset, what.to_string())),
                Found::Record {
                    kind,
                    payload,
                    size,
                } => {
                    let record = Record::decode(kind, payload)
                        .map_err(|e| corrupt(offset, e.to_string()))?;
                    let first = offset == 0;
                    match (&record, first) {
                        (Record::Segment { seq: found }, true) if *found == seq => {}
                        (_, true) => {
                            return Err(corrupt(0, "segment does not start with its header".into()))
                        }
                        (Record::Segment { .. }, false) => {
                            return Err(corrupt(offset, "segment header inside a segment".into()))
                        }
                        _ => {}
                    }
                    scan.records.push(Located {
                        file: Arc::clone(&file),
                        offset: offset as u64,
                        size: size as u64,
                        record,
                    });
                    offset += size;
                }
            }
        }
        let end = scan
            .torn_tail
            .as_ref()
            .filter(|t| t.file == name)
            .map_or(offset, |t| t.offset as usize);
        tails.push(SectorTail::of(&name, &bytes, end));
    }
    Ok((scan, tails))
}

/// Replays scanned records into the log they describe, moving each entry out of its record
/// rather than copying it.
fn replay<D: Dir>(dir: &D, records: Vec<Located>) -> Result<LogState> {
    let mut state = LogState::default();
    for located in &records {
        match &located.record {
            Record::HardState(h) => {
                state.hard_state = Some(h.clone());
                state.journal.clear();
            }
            Record::Journal(r) => state.journal.push(r.clone()),
            Record::Restate {
                hard_state,
                journal,
            } => {
                state.hard_state = hard_state.clone();
                state.journal = journal.clone();
            }
            Record::Base(meta) => state.base = Some(*meta),
            _ => {}
        }
    }
    let floor = state.base.map_or(1, |b| b.index + 1);
    for located in records {
        match located.record {
            Record::Entry(entry) if entry.index >= floor => {
                let expected = state.entries.last().map_or(floor, |e| e.index + 1);
                if entry.index != expected {
                    return Err(StorageError::Corrupt {
                        file: dir.describe(&located.file),
                        offset: located.offset,
                        reason: format!("entry {} where {expected} was expected", entry.index),
                    });
                }
                state.entries.push(entry);
            }
            Record::Truncate(index) => state.entries.retain(|e| e.index < index),
            _ => {}
        }
    }
    Ok(state)
}

/// The segments the scanned records lie in, with where their records end.
fn segments_of(records: &[Located]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for located in records {
        if let Record::Segment { seq } = located.record {
            segments.push(Segment {
                seq,
                bytes: 0,
                restated_bytes: 0,
                max_index: 0,
            });
        }
        let Some(segment) = segments.last_mut() else {
            continue;
        };
        // Where its records end: the file may go on, in space allocated ahead.
        segment.bytes = located.offset + located.size;
        if let Record::Entry(e) = &located.record {
            segment.max_index = segment.max_index.max(e.index);
        }
    }
    segments
}

/// A segment of the log.
#[derive(Clone, Debug)]
struct Segment {
    seq: u64,
    bytes: u64,
    /// Bytes of what it restates from the segments before it (0 when not known): a segment
    /// is sealed after `segment_bytes` of new records, so a large restated journal cannot
    /// make every sync start a new segment.
    restated_bytes: u64,
    /// Highest entry index ever written into it.
    max_index: LogIndex,
}

/// The segmented file log.
#[derive(Debug)]
pub struct FileLog<D: Dir> {
    dir: D,
    options: WalOptions,
    /// Oldest first; the last is the one appended to.
    segments: Vec<Segment>,
    staged: Vec<u8>,
    staged_max_index: LogIndex,
    /// Records were handed to the active segment since its last sync.
    unsynced: bool,
    hard_state: Option<Vec<u8>>,
    /// Journal records since the hard state, restated at the start of every new segment.
    journal: Vec<Vec<u8>>,
    base: Option<SnapshotMeta>,
    last_index: LogIndex,
}

impl<D: Dir> FileLog<D> {
    /// Opens (or creates) the log in `dir`: checks every segment, cuts off a torn tail, makes
    /// what is left durable, and returns what the log holds.
    pub fn open(mut dir: D, options: WalOptions) -> Result<(FileLog<D>, LogState)> {
        let (scan, tails) = scan_with(&dir, &options)?;
        let segments = segments_of(&scan.records);
        let mut state = replay(&dir, scan.records)?;
        if let Some(torn) = &scan.torn_tail {
            if torn.offset == 0 {
                // A segment whose header never reached the disk was never a segment: remove it,
                // so that the one before stays the last (where a torn write may still be cut).
                dir.remove(&torn.file)?;
                dir.sync_dir()?;
            } else {
                dir.truncate(&torn.file, torn.offset)?;
            }
            state.repairs.push(format!(
                "cut off a torn write at the end of the log ({}): {} bytes from byte {} of {}",
                torn.what,
                torn.bytes,
                torn.offset,
                dir.describe(&torn.file)
            ));
        }
        let mut log = FileLog {
            dir,
            options,
            segments,
            staged: Vec::new(),
            staged_max_index: 0,
            unsynced: false,
            hard_state: state.hard_state.clone(),
            journal: state.journal.clone(),
            base: state.base,
            last_index: state.last_index(),
        };
        // What was just read may be in the page cache only: written by a life that was killed
        // before its fdatasync. This life acts on it (a vote is granted again, an append is
        // acknowledged again, with no new write), so it must outlast a power loss from now on.
        // Sealed segments were synced when they were sealed; the last one is synced here.
        if let Some(last) = log.segments.last() {
            log.dir.sync(&segment_name(last.seq))?;
        }
        log.dir.sync_dir()?;
        match log.segments.last().map(|s| s.seq) {
            None => log.start_segment(1)?,
            // A crash while the last segment was started may have cut off its restatement
            // of the hard state and journal: once the segments before it were purged, those
            // would be gone. Restate them in a new segment (cheap: it happens once a start).
            Some(last) if log.segments.len() > 1 => log.start_segment(last + 1)?,
            // Writing goes on in this one. If its records end where the writer's rules ask for
            // a pad, they need the pad they would have had, had they not ended where a crash
            // cut a write (or been written before the rules were): pad them now, before the
            // space after them is allocated again (a cut may have taken it away). A pad that
            // would run into the next sector (a few bytes were left) would be a write of its
            // own over two sectors, whose first a crash could lose while the second arrived,
            // leaving too few zeros to tell from damage: that segment is sealed instead, and
            // writing goes on in a new one.
            Some(last) => {
                let name = segment_name(last);
                let pad = tails
                    .iter()
                    .find(|t| t.file == name)
                    .and_then(SectorTail::pad);
                match pad {
                    Some(pad) if pad.len() > record::SECTOR_BYTES => {
                        log.start_segment(last + 1)?;
                    }
                    pad => {
                        if let Some(pad) = pad {
                            let active = &mut log.segments[0];
                            log.dir.write_at(&name, active.bytes, &pad)?;
                            log.dir.sync(&name)?;
                            active.bytes += pad.len() as u64;
                        }
                        let target = log.options.segment_bytes.max(log.segments[0].bytes);
                        log.dir.preallocate(&name, target)?;
                    }
                }
            }
        }
        Ok((log, state))
    }

    /// The directory back (the simulator crashes it and reopens).
    pub fn into_dir(self) -> D {
        self.dir
    }

    /// The directory, in place (a test arms a fault in it).
    pub fn dir_mut(&mut self) -> &mut D {
        &mut self.dir
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn stage(&mut self, record: &Record) {
        record.encode(&mut self.staged);
    }

    /// Seals the active segment, if any, and creates segment `seq`, restating the hard state,
    /// the journal since it and the base, and makes it durable.
    fn start_segment(&mut self, seq: u64) -> Result<()> {
        if let Some(active) = self.segments.last() {
            // Cut off the space allocated ahead, durably before the next segment exists: a
            // sealed segment ends with its last record.
            let name = segment_name(active.seq);
            if self.dir.len(&name)? > active.bytes {
                self.dir.truncate(&name, active.bytes)?;
            }
        }
        let name = segment_name(seq);
        let mut bytes = Vec::new();
        Record::Segment { seq }.encode(&mut bytes);
        if self.hard_state.is_some() || !self.journal.is_empty() {
            Record::Restate {
                hard_state: self.hard_state.clone(),
                journal: self.journal.clone(),
            }
            .encode(&mut bytes);
        }
        if let Some(b) = self.base {
            Record::Base(b).encode(&mut bytes);
        }
        pad_tail(&mut bytes, 0);
        self.dir.create(&name)?;
        let allocated = bytes.len() as u64 + self.options.segment_bytes;
        self.dir.preallocate(&name, allocated)?;
        self.dir.write_at(&name, 0, &bytes)?;
        self.dir.sync(&name)?;
        self.dir.sync_dir()?;
        self.segments.push(Segment {
            seq,
            bytes: bytes.len() as u64,
            restated_bytes: bytes.len() as u64,
            max_index: 0,
        });
        Ok(())
    }

    /// Deletes the oldest sealed segments whose entries a snapshot covers.
    fn purge(&mut self) -> Result<()> {
        let Some(base) = self.base else { return Ok(()) };
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[0].max_index <= base.index {
            let old = self.segments.remove(0);
            self.dir.remove(&segment_name(old.seq))?;
            removed = true;
        }
        if removed {
            self.dir.sync_dir()?;
        }
        Ok(())
    }
}

impl<D: Dir> FileLog<D> {
    /// Hands every staged record to the file system without waiting for the disk: after a
    /// crash any prefix of them may survive. `sync` does this too, then waits.
    pub fn flush(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let active = self
            .segments
            .last_mut()
            .expect("a log always has an active segment");
        pad_tail(&mut self.staged, active.bytes);
        self.dir
            .write_at(&segment_name(active.seq), active.bytes, &self.staged)?;
        active.bytes += self.staged.len() as u64;
        active.max_index = active.max_index.max(self.staged_max_index);
        self.staged.clear();
        self.staged_max_index = 0;
        self.unsynced = true;
        Ok(())
    }
}

impl<D: Dir> LogStore for FileLog<D> {
    fn save_hard_state(&mut self, hard_state: &[u8]) -> Result<()> {
        record::encode_with(KIND_HARD_STATE, &mut self.staged, |enc| {
            enc.bytes(hard_state);
        });
        self.hard_state = Some(hard_state.to_vec());
        self.journal.clear();
        Ok(())
    }

    fn append_journal(&mut self, records: &[Vec<u8>]) -> Result<()> {
        for r in records {
            record::encode_with(KIND_JOURNAL, &mut self.staged, |enc| {
                enc.bytes(r);
            });
        }
        self.journal.extend_from_slice(records);
        Ok(())
    }

    fn truncate_from(&mut self, index: LogIndex) -> Result<()> {
        self.stage(&Record::Truncate(index));
        let floor = self.base.map_or(0, |b| b.index);
        self.last_index = self.last_index.min(index.saturating_sub(1)).max(floor);
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        for entry in entries {
            if entry.index != self.last_index + 1 {
                return Err(StorageError::Misuse(format!(
                    "append of entry {} after entry {}",
                    entry.index, self.last_index
                )));
            }
            encode_entry(entry, &mut self.staged);
            self.last_index = entry.index;
            self.staged_max_index = self.staged_max_index.max(entry.index);
        }
        Ok(())
    }

    fn compact_to(&mut self, base: SnapshotMeta) -> Result<()> {
        self.base = Some(base);
        self.stage(&Record::Base(base));
        self.last_index = self.last_index.max(base.index);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if !self.unsynced {
            return Ok(());
        }
        let active = self
            .segments
            .last()
            .expect("a log always has an active segment");
        let written = active.bytes.saturating_sub(active.restated_bytes);
        let (seq, full) = (active.seq, written >= self.options.segment_bytes);
        self.dir.sync(&segment_name(seq))?;
        self.unsynced = false;
        if full {
            self.start_segment(seq + 1)?;
        }
        self.purge()
    }

    fn last_index(&self) -> LogIndex {
        self.last_index
    }
}
