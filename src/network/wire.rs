//! A structural check of protobuf bytes, run before the generated reader sees them.
//!
//! quick-protobuf 0.8 trusts the length of a nested message: a field inside it whose varint
//! runs past the nested message's end moves the reader beyond that end, and the next bounds
//! computation underflows (a panic with overflow checks on, garbage reads without). Found by
//! this crate's property tests with a few flipped bits. Bytes from a remote peer must never do
//! that, so every field, at the top level and inside the nested messages the reader descends
//! into, is checked to lie within its parent first.

/// Tags (`field << 3 | 2`) of `Message` fields the generated reader parses as nested messages:
/// `record` (3), `closerPeers` (8) and `providerPeers` (9).
const NESTED_MESSAGE_TAGS: [u64; 3] = [26, 66, 74];

/// The bytes are not structurally valid protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf structure at byte {offset}")]
pub struct WireError {
    /// Where, in the enclosing message, the problem starts.
    pub offset: usize,
}

/// Checks that `bytes` is a sequence of well-formed fields, each within bounds, and that the
/// nested messages of `Message` are well-formed in turn.
pub(crate) fn check_message(bytes: &[u8]) -> Result<(), WireError> {
    check_fields(bytes, true)
}

fn check_fields(bytes: &[u8], descend: bool) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < bytes.len() {
        let error = WireError { offset: pos };
        let (tag, n) = varint(&bytes[pos..]).ok_or(error)?;
        if tag > u64::from(u32::MAX) {
            return Err(error);
        }
        pos += n;
        let rest = &bytes[pos..];
        let skip = match tag & 0x7 {
            0 => varint(rest).ok_or(error)?.1,
            1 => 8,
            5 => 4,
            2 => {
                let (len, n) = varint(rest).ok_or(error)?;
                let len = usize::try_from(len).map_err(|_| error)?;
                let body = rest.get(n..n.checked_add(len).ok_or(error)?).ok_or(error)?;
                if descend && NESTED_MESSAGE_TAGS.contains(&tag) {
                    check_fields(body, false).map_err(|_| error)?;
                }
                n + len
            }
            _ => return Err(error),
        };
        if skip > rest.len() {
            return Err(error);
        }
        pos += skip;
    }
    Ok(())
}

/// Decodes a varint of at most 10 bytes; returns it and its length.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_fields() {
        // type = 4, key = "ab", closerPeers { id = "x" }
        let bytes = [
            0x08, 0x04, 0x12, 0x02, b'a', b'b', 0x42, 0x03, 0x0a, 0x01, b'x',
        ];
        assert_eq!(check_message(&bytes), Ok(()));
    }

    #[test]
    fn rejects_a_length_past_the_end() {
        assert!(check_message(&[0x12, 0x05, b'a']).is_err());
    }

    #[test]
    fn rejects_a_nested_field_running_past_its_message() {
        // closerPeers of length 2 whose inner field announces 3 bytes.
        assert!(check_message(&[0x42, 0x02, 0x0a, 0x03, b'x', b'y', b'z']).is_err());
        // A nested varint cut by the nested message's end.
        assert!(check_message(&[0x42, 0x02, 0x18, 0x80, 0x01]).is_err());
    }

    #[test]
    fn rejects_truncated_and_invalid_wire_types() {
        assert!(check_message(&[0x08]).is_err());
        assert!(check_message(&[0x09, 1, 2, 3]).is_err());
        assert!(check_message(&[0x0b]).is_err());
        assert!(check_message(&[0xff; 11]).is_err());
    }
}
