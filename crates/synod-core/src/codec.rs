//! A minimal binary encoding for commands, hard state and snapshots.
//!
//! Integers are LEB128 varints, byte strings are a varint length then the bytes. Decoding
//! never panics on bad input: every read is bounds-checked and reports what went wrong and
//! where, because these bytes come from disks and peers.

use bytes::Bytes;
use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("input ends early at byte {offset}: expected {what}")]
    UnexpectedEnd {
        /// Where the missing value starts.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A varint ran past 64 bits.
    #[error("varint too long at byte {offset}")]
    VarintOverflow {
        /// Where the varint starts.
        offset: usize,
    },
    /// A tag byte names no known variant.
    #[error("unknown {what} tag {tag} at byte {offset}")]
    UnknownTag {
        /// What the tag selects.
        what: &'static str,
        /// The tag found.
        tag: u64,
        /// Where it was found.
        offset: usize,
    },
    /// A length is larger than the input that is left.
    #[error("length {len} at byte {offset} exceeds the {remaining} bytes left")]
    LengthTooLarge {
        /// The claimed length.
        len: u64,
        /// Where it was found.
        offset: usize,
        /// Bytes actually left.
        remaining: usize,
    },
    /// A value that decoded but cannot be right (a field out of its range).
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    /// Bytes were left over after the value.
    #[error("{count} unexpected trailing bytes")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// Appends encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

/// Room kept after a byte string that grew the buffer, for the fields after it.
const ROOM_AFTER_BYTES: usize = 256;

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// An encoder that appends to `buf`, which `finish` hands back.
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Encoder { buf }
    }

    /// An empty encoder with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.buf.push(value);
        self
    }

    /// Appends a varint.
    pub fn u64(&mut self, mut value: u64) -> &mut Self {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
        self
    }

    /// Appends a signed integer, zig-zag encoded.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.u64(((value << 1) ^ (value >> 63)) as u64)
    }

    /// Appends a bool as one byte.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u8(u8::from(value))
    }

    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.u64(value.len() as u64);
        // A value that does not fit grows the buffer with room to spare for the small
        // fields that usually follow it. Without it, the first of them doubles a buffer just
        // grown to the value's size: with a 1 MiB value, a fresh 2 MiB allocation (whose
        // pages the kernel zeroes) and a 1 MiB copy, for a few bytes.
        if value.len() > self.buf.capacity() - self.buf.len() {
            self.buf.reserve(value.len() + ROOM_AFTER_BYTES);
        }
        self.buf.extend_from_slice(value);
        self
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values back from a byte slice, in the order they were encoded.
#[derive(Debug)]
pub struct Decoder<'a> {
    input: &'a [u8],
    offset: usize,
    /// The buffer `input` is, when the byte strings read from it may share it.
    shared: Option<&'a Bytes>,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Decoder {
            input,
            offset: 0,
            shared: None,
        }
    }

    /// A decoder at the start of `input` whose [`Decoder::owned_bytes`] share its buffer (a
    /// reference count, no copy). What is read keeps the whole of `input` alive: meant for a
    /// buffer about as long-lived as what is read from it, such as one log entry's command,
    /// not a large message or a snapshot.
    pub fn shared(input: &'a Bytes) -> Self {
        Decoder {
            input,
            offset: 0,
            shared: Some(input),
        }
    }

    /// From here on, byte strings are read into copies, as from [`Decoder::new`].
    pub fn stop_sharing(&mut self) {
        self.shared = None;
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.offset
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let byte = *self
            .input
            .get(self.offset)
            .ok_or(DecodeError::UnexpectedEnd {
                offset: self.offset,
                what,
            })?;
        self.offset += 1;
        Ok(byte)
    }

    /// Reads a varint.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.offset;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::VarintOverflow { offset: start });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow { offset: start })
    }

    /// Reads a zig-zag encoded signed integer.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let raw = self.u64(what)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// Reads a bool; any non-zero byte is true.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        Ok(self.u8(what)? != 0)
    }

    /// Reads a varint that is a tag, checking it is below `count`.
    pub fn tag(&mut self, what: &'static str, count: u64) -> Result<u64, DecodeError> {
        let offset = self.offset;
        let tag = self.u64(what)?;
        if tag >= count {
            return Err(DecodeError::UnknownTag { what, tag, offset });
        }
        Ok(tag)
    }

    /// Reads a varint that counts items, each at least one byte long, so a corrupt count
    /// cannot make the caller reserve more memory than the input could describe.
    pub fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.offset;
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(DecodeError::LengthTooLarge {
                len,
                offset,
                remaining: self.remaining(),
            });
        }
        Ok(len as usize)
    }

    /// Reads a length-prefixed byte string, borrowed from the input.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.count(what)?;
        let value = &self.input[self.offset..self.offset + len];
        self.offset += len;
        Ok(value)
    }

    /// Reads a length-prefixed byte string into an owned buffer: a copy, or for a
    /// [`Decoder::shared`] one, a slice of the input's buffer.
    pub fn owned_bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let value = self.bytes(what)?;
        Ok(match self.shared {
            Some(buffer) => buffer.slice_ref(value),
            None => Bytes::copy_from_slice(value),
        })
    }

    /// Checks the whole input was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_of_value() {
        let mut enc = Encoder::new();
        enc.u8(7)
            .u64(0)
            .u64(127)
            .u64(128)
            .u64(u64::MAX)
            .i64(-1)
            .i64(i64::MIN)
            .i64(i64::MAX)
            .bool(true)
            .bytes(b"")
            .bytes(b"hello");
        let buf = enc.finish();
        let mut dec = Decoder::new(&buf);
        assert_eq!(dec.u8("a").unwrap(), 7);
        assert_eq!(dec.u64("b").unwrap(), 0);
        assert_eq!(dec.u64("c").unwrap(), 127);
        assert_eq!(dec.u64("d").unwrap(), 128);
        assert_eq!(dec.u64("e").unwrap(), u64::MAX);
        assert_eq!(dec.i64("f").unwrap(), -1);
        assert_eq!(dec.i64("g").unwrap(), i64::MIN);
        assert_eq!(dec.i64("h").unwrap(), i64::MAX);
        assert!(dec.bool("i").unwrap());
        assert_eq!(dec.bytes("j").unwrap(), b"");
        assert_eq!(dec.bytes("k").unwrap(), b"hello");
        dec.finish().unwrap();
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut enc = Encoder::new();
        enc.u64(300).bytes(b"payload");
        let buf = enc.finish();
        for cut in 0..buf.len() {
            let mut dec = Decoder::new(&buf[..cut]);
            let result = dec.u64("n").and_then(|_| dec.bytes("payload").map(|_| ()));
            assert!(result.is_err(), "cut at {cut} must fail");
        }
    }

    #[test]
    fn absurd_lengths_and_overlong_varints_are_rejected() {
        let mut enc = Encoder::new();
        enc.u64(u64::MAX);
        let buf = enc.finish();
        assert!(matches!(
            Decoder::new(&buf).bytes("v"),
            Err(DecodeError::LengthTooLarge { .. })
        ));
        let overlong = [0xff; 11];
        assert!(matches!(
            Decoder::new(&overlong).u64("v"),
            Err(DecodeError::VarintOverflow { offset: 0 })
        ));
        assert!(matches!(
            Decoder::new(&[5]).tag("kind", 3),
            Err(DecodeError::UnknownTag { tag: 5, .. })
        ));
        let mut dec = Decoder::new(&[1, 2]);
        dec.u8("x").unwrap();
        assert_eq!(dec.finish(), Err(DecodeError::TrailingBytes { count: 1 }));
    }
}
