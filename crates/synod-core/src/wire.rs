//! How engine messages cross a network: a stable binary encoding per engine.

use crate::codec::{DecodeError, Decoder, Encoder};

/// A message type with a stable binary encoding. Decoding never panics: the bytes come from
/// peers, and garbage must be an error.
pub trait Wire: Sized {
    /// Appends the message's encoding.
    fn encode(&self, enc: &mut Encoder);

    /// Reads a message.
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError>;

    /// The message as bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(64);
        self.encode(&mut enc);
        enc.finish()
    }

    /// A message from exactly these bytes (trailing bytes are an error).
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut dec = Decoder::new(bytes);
        let message = Self::decode(&mut dec)?;
        dec.finish()?;
        Ok(message)
    }
}

/// Checks for an engine's message codec, for its tests: every message round-trips, every
/// truncation is an error, and random garbage never panics.
pub mod conformance {
    use super::Wire;
    use crate::rng::Rng;
    use std::fmt::Debug;

    /// Asserts `message` survives encoding and that no prefix of its encoding decodes.
    pub fn round_trip<M: Wire + PartialEq + Debug>(message: &M) {
        let bytes = message.to_bytes();
        assert_eq!(
            M::from_bytes(&bytes).as_ref(),
            Ok(message),
            "round trip of {message:?}"
        );
        for cut in 0..bytes.len() {
            assert!(
                M::from_bytes(&bytes[..cut]).is_err(),
                "a prefix of {cut} bytes of {message:?} decoded"
            );
        }
    }

    /// Decodes `count` random byte strings, and random mutations of `samples`; none may panic.
    pub fn garbage_never_panics<M: Wire>(samples: &[Vec<u8>], count: usize) {
        let mut rng = Rng::new(0x5eed);
        for i in 0..count {
            let bytes: Vec<u8> = match samples.get(i % samples.len().max(1)) {
                Some(sample) if i % 2 == 0 && !sample.is_empty() => {
                    let mut b = sample.clone();
                    let at = rng.index(b.len());
                    b[at] = rng.next_u64() as u8;
                    b
                }
                _ => (0..rng.range(0, 64))
                    .map(|_| rng.next_u64() as u8)
                    .collect(),
            };
            let _ = M::from_bytes(&bytes);
        }
    }
}
