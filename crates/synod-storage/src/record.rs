//! Framing of the records stored in log segments and snapshot files.
//!
//! ```text
//! +------------+--------+----------------+-----------------+-----------------+
//! | length u32 | kind u8| header crc u32 | payload crc u32 | payload (length)|
//! +------------+--------+----------------+-----------------+-----------------+
//! ```
//!
//! All integers little-endian; checksums are CRC32C. The header has its own checksum so that a
//! flipped bit in a length can never pass for a record cut short by a crash: only a tail that
//! is genuinely short (or zero-filled, as unwritten blocks read back) counts as torn.

/// Bytes before a record's payload.
pub const HEADER_BYTES: usize = 13;

/// The largest payload a record may have; anything claiming more is corrupt.
pub const PAYLOAD_BYTES_MAX: usize = 256 << 20;

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
    /// A record cut short, or a zero-filled tail: what an interrupted write leaves.
    Torn(&'static str),
    /// Bytes that fail their checksum: damage, not an interrupted write.
    Corrupt(&'static str),
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Reads the record at the start of `rest`.
pub fn read(rest: &[u8]) -> Found<'_> {
    if rest.is_empty() {
        return Found::End;
    }
    if rest.iter().all(|&b| b == 0) {
        return Found::Torn("zero-filled tail");
    }
    if rest.len() < HEADER_BYTES {
        return Found::Torn("record header cut short");
    }
    let len = u32_at(rest, 0) as usize;
    let kind = rest[4];
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&rest[0..4]), &[kind]);
    if header_crc != u32_at(rest, 5) {
        return Found::Corrupt("record header checksum mismatch");
    }
    if len > PAYLOAD_BYTES_MAX {
        return Found::Corrupt("record length beyond the maximum");
    }
    if rest.len() < HEADER_BYTES + len {
        return Found::Torn("record cut short");
    }
    let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
    if crc32c::crc32c(payload) != u32_at(rest, 9) {
        return Found::Corrupt("record payload checksum mismatch");
    }
    Found::Record {
        kind,
        payload,
        size: HEADER_BYTES + len,
    }
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

    #[test]
    fn zeros_are_torn_but_any_flipped_bit_is_corrupt() {
        assert_eq!(read(&[0; 40]), Found::Torn("zero-filled tail"));
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
