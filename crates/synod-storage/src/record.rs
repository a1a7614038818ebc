//! Framing of the records stored in log segments and snapshot files.
//!
//! ```text
//! +------------+--------+----------------+-----------------+-----------------+
//! | length u32 | kind u8| header crc u32 | payload crc u32 | payload (length)|
//! +------------+--------+----------------+-----------------+-----------------+
//! ```
//!
//! All integers little-endian; checksums are CRC32C. The header has its own checksum so that a
//! flipped bit in a length can never pass for a record cut short by a crash. What a crash can
//! leave is a record that is short, a tail of zeros, or a record in which a whole disk sector
//! reads back as zeros (the file's length was recorded, or its space allocated ahead, but that
//! sector's data never reached the disk: ext4 with delayed allocation, XFS). [`torn_write_evidence`]
//! tells the last of those from damage to written data, which never zeroes a whole sector.

/// Bytes before a record's payload.
pub const HEADER_BYTES: usize = 13;

/// The largest payload a record may have; anything claiming more is corrupt.
pub const PAYLOAD_BYTES_MAX: usize = 256 << 20;

/// The unit in which a disk writes, and so in which a crash tears a write.
pub const SECTOR_BYTES: usize = 512;

/// The shortest run of zeros taken as a sector that never reached the disk, when the run is
/// only part of a sector (at the start of a record, or at the end of the file). Records end in
/// zero bytes often enough (varints of 0) that a few zeros prove nothing.
pub const ZERO_RUN_BYTES_MIN: usize = 32;

/// Appends one framed record to `out`.
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= PAYLOAD_BYTES_MAX,
        "record payload too large"
    );
    let len = (payload.len() as u32).to_le_bytes();
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&len), &[kind]);
    out.extend_from_slice(&len);
    out.push(kind);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one framed record to `out`, with the payload written in place by `write`: no
/// intermediate buffer, no copy.
pub fn encode_with(
    kind: u8,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut synod_core::codec::Encoder),
) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    let mut enc = synod_core::codec::Encoder::from_vec(std::mem::take(out));
    write(&mut enc);
    *out = enc.finish();
    let len = out.len() - start - HEADER_BYTES;
    assert!(len <= PAYLOAD_BYTES_MAX, "record payload too large");
    let len_bytes = (len as u32).to_le_bytes();
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &[kind]);
    let payload_crc = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    let header = &mut out[start..start + HEADER_BYTES];
    header[0..4].copy_from_slice(&len_bytes);
    header[4] = kind;
    header[5..9].copy_from_slice(&header_crc.to_le_bytes());
    header[9..13].copy_from_slice(&payload_crc.to_le_bytes());
}

/// What is found at an offset of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A whole, intact record, `size` bytes long in all.
    Record {
        /// Its kind byte.
        kind: u8,
        /// Its payload.
        payload: &'a [u8],
        /// Header plus payload.
        size: usize,
    },
    /// The buffer ends here.
    End,
    /// Nothing but zeros from here on: space allocated ahead of the writes, or a write whose
    /// data never reached the disk. Either way no record.
    Zeros,
    /// A record cut short: what an interrupted write leaves.
    Torn(&'static str),
    /// Bytes that fail their checksum: damage, not an interrupted write.
    Corrupt(&'static str),
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Checks a record's header: its kind and payload length, or what is wrong with it.
pub fn header(header: &[u8; HEADER_BYTES]) -> Result<(u8, usize), &'static str> {
    let len = u32_at(header, 0) as usize;
    let kind = header[4];
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..4]), &[kind]);
    if header_crc != u32_at(header, 5) {
        return Err("record header checksum mismatch");
    }
    if len > PAYLOAD_BYTES_MAX {
        return Err("record length beyond the maximum");
    }
    Ok((kind, len))
}

/// Whether `payload` is what the checked `header` says it is.
pub fn payload_matches(header: &[u8; HEADER_BYTES], payload: &[u8]) -> bool {
    crc32c::crc32c(payload) == u32_at(header, 9)
}

/// Reads the record at the start of `rest`.
pub fn read(rest: &[u8]) -> Found<'_> {
    if rest.is_empty() {
        return Found::End;
    }
    if rest.iter().all(|&b| b == 0) {
        return Found::Zeros;
    }
    let Some(head) = rest.first_chunk::<HEADER_BYTES>() else {
        return Found::Torn("record header cut short");
    };
    let (kind, len) = match header(head) {
        Ok(found) => found,
        Err(reason) => return Found::Corrupt(reason),
    };
    if rest.len() < HEADER_BYTES + len {
        return Found::Torn("record cut short");
    }
    let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
    if !payload_matches(head, payload) {
        return Found::Corrupt("record payload checksum mismatch");
    }
    Found::Record {
        kind,
        payload,
        size: HEADER_BYTES + len,
    }
}

/// Whether the record at `offset` of `file`, which fails its checks, shows the mark of a write
/// a crash cut short: some disk sector it covers reads back as zeros (from the record's start
/// on, and to the end of the file; at least [`ZERO_RUN_BYTES_MIN`] bytes of it). A sector that
/// was synced reads back as written, so such a record was never synced, and neither was
/// anything after it (a sync makes everything before it durable). A flipped bit, or any other
/// damage to written data, leaves no zeroed sector: that stays corruption. (A record whose own
/// data holds a whole sector of zeros and that is then damaged would be taken for torn; etcd's
/// WAL has the same blind spot. Refusing to start is the safe way to be wrong, so the rule
/// asks for no less than a sector's worth of evidence.)
///
/// The record's extent is taken from its header when the header is intact, else the header
/// alone is examined. The zeros of the record's last sector run on past its end, to the end of
/// that sector or of the file: in a file written into space allocated ahead, so a record that
/// ends a few bytes into a sector, and whose own bytes there are zeros, followed by unwritten
/// space, would show a zeroed sector although it was written whole. A writer into such space
/// must never leave a record like that last (the log follows it with a pad record).
pub fn torn_write_evidence(file: &[u8], offset: usize) -> bool {
    let rest = &file[offset.min(file.len())..];
    let claimed = match rest.first_chunk::<HEADER_BYTES>().map(header) {
        Some(Ok((_, len))) => HEADER_BYTES + len,
        _ => HEADER_BYTES,
    };
    let end = offset.saturating_add(claimed).min(file.len());
    let mut sector_start = offset - offset % SECTOR_BYTES;
    while sector_start < end {
        let from = sector_start.max(offset);
        let to = (sector_start + SECTOR_BYTES).min(file.len());
        if to - from >= ZERO_RUN_BYTES_MIN && file[from..to].iter().all(|&b| b == 0) {
            return true;
        }
        sector_start += SECTOR_BYTES;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(kind, payload, &mut out);
        out
    }

    #[test]
    fn encoding_in_place_frames_the_same_bytes() {
        let mut in_place = vec![9, 9];
        encode_with(4, &mut in_place, |enc| {
            enc.bytes(b"abc").u64(300);
        });
        let mut payload = synod_core::codec::Encoder::new();
        payload.bytes(b"abc").u64(300);
        let mut copied = vec![9, 9];
        encode(4, &payload.finish(), &mut copied);
        assert_eq!(in_place, copied);
    }

    #[test]
    fn a_record_reads_back() {
        let buf = framed(3, b"hello");
        assert_eq!(
            read(&buf),
            Found::Record {
                kind: 3,
                payload: b"hello",
                size: HEADER_BYTES + 5
            }
        );
        assert_eq!(read(&[]), Found::End);
    }

    #[test]
    fn every_cut_of_a_record_is_torn() {
        let buf = framed(2, b"some payload");
        for cut in 1..buf.len() {
            assert!(
                matches!(read(&buf[..cut]), Found::Torn(_)),
                "cut at {cut}: {:?}",
                read(&buf[..cut])
            );
        }
    }

    /// A log of `count` records of `size`-byte payloads, each record's payload non-zero.
    fn log_of(count: usize, size: usize) -> (Vec<u8>, Vec<usize>) {
        let mut file = Vec::new();
        let mut starts = Vec::new();
        for i in 0..count {
            starts.push(file.len());
            encode(2, &vec![(i % 250 + 1) as u8; size], &mut file);
        }
        (file, starts)
    }

    #[test]
    fn a_zeroed_sector_inside_a_record_is_a_torn_write() {
        let (mut file, starts) = log_of(8, 700);
        let victim = starts[5];
        let sector = (victim / SECTOR_BYTES + 1) * SECTOR_BYTES;
        file[sector..sector + SECTOR_BYTES].fill(0);
        assert!(matches!(read(&file[victim..]), Found::Corrupt(_)));
        assert!(torn_write_evidence(&file, victim));
        assert!(
            !torn_write_evidence(&file, starts[4]),
            "an intact record before it shows nothing"
        );
    }

    #[test]
    fn a_zeroed_sector_over_a_header_is_a_torn_write() {
        let (mut file, starts) = log_of(8, 700);
        let victim = starts[3];
        let sector_end = (victim / SECTOR_BYTES + 1) * SECTOR_BYTES;
        // The sector holding the header, from the record's start on, never reached the disk.
        file[victim..sector_end].fill(0);
        assert!(matches!(read(&file[victim..]), Found::Corrupt(_)));
        assert!(torn_write_evidence(&file, victim));
    }

    #[test]
    fn a_few_zero_bytes_at_the_end_of_a_damaged_record_prove_nothing() {
        // The file ends a byte past a sector boundary, on a record whose last byte is a zero
        // varint: a flipped bit anywhere in that synced record must stay corruption.
        let mut file = Vec::new();
        let payload_len = 2 * SECTOR_BYTES - HEADER_BYTES - 20;
        encode(2, &[7; 20], &mut file);
        let mut payload =
            vec![9u8; payload_len + 1 - (file.len() + HEADER_BYTES + payload_len) % SECTOR_BYTES];
        *payload.last_mut().expect("non-empty") = 0;
        let start = file.len();
        encode(4, &payload, &mut file);
        assert_eq!(
            file.len() % SECTOR_BYTES,
            1,
            "the file ends one byte into a sector"
        );
        file[start + 40] ^= 0x10;
        assert!(matches!(read(&file[start..]), Found::Corrupt(_)));
        assert!(!torn_write_evidence(&file, start));
    }

    #[test]
    fn garbage_or_a_flipped_bit_is_never_taken_for_a_torn_write() {
        let (file, starts) = log_of(8, 700);
        for &start in &starts {
            for at in [start, start + 5, start + HEADER_BYTES + 3, start + 600] {
                for bit in 0..8 {
                    let mut damaged = file.clone();
                    damaged[at] ^= 1 << bit;
                    assert!(!torn_write_evidence(&damaged, start), "bit {bit} at {at}");
                }
            }
            let mut garbage = file.clone();
            let sector = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
            garbage[sector..sector + SECTOR_BYTES].fill(0x5a);
            assert!(!torn_write_evidence(&garbage, start));
        }
    }

    #[test]
    fn zeros_are_no_record_but_any_flipped_bit_is_corrupt() {
        assert_eq!(read(&[0; 40]), Found::Zeros);
        let buf = framed(2, b"some payload");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    matches!(read(&damaged), Found::Corrupt(_)),
                    "flip of bit {bit} in byte {byte} went unnoticed: {:?}",
                    read(&damaged)
                );
            }
        }
    }
}
