//! Keys as people paste them: CIDs (v0 `Qm...`, v1 multibase `b...`/`z...`/`f...`),
//! multihashes (hex or base58), peer ids, and `/namespace/...` record keys.

const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn base58(text: &str) -> Option<Vec<u8>> {
    let mut bytes: Vec<u8> = Vec::new();
    for c in text.bytes() {
        let mut carry = BASE58.iter().position(|b| *b == c)? as u32;
        for byte in bytes.iter_mut().rev() {
            carry += u32::from(*byte) * 58;
            *byte = carry as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    let zeros = text.bytes().take_while(|c| *c == b'1').count();
    let mut out = vec![0u8; zeros];
    out.extend(bytes);
    Some(out)
}

fn base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let value = match c {
            b'a'..=b'z' => c - b'a',
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (value, rest) = unsigned_varint::decode::u64(bytes).ok()?;
    Some((value, rest))
}

/// Checks that `bytes` is exactly one multihash.
fn multihash(bytes: &[u8]) -> Option<Vec<u8>> {
    let (_, rest) = varint(bytes)?;
    let (len, digest) = varint(rest)?;
    (digest.len() as u64 == len && len > 0).then(|| bytes.to_vec())
}

/// The multihash a provider key is made of, from a CID or a multihash.
pub fn provider_key(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let bad = || format!("not a CID or multihash: {text:?}");
    // CIDv0: a base58 sha2-256 multihash.
    if text.len() == 46 && text.starts_with("Qm") {
        return base58(text).and_then(|b| multihash(&b)).ok_or_else(bad);
    }
    if let Some(bytes) = hex(text).and_then(|b| multihash(&b)) {
        return Ok(bytes);
    }
    let decoded = match text.as_bytes().first() {
        Some(b'b') => base32(&text[1..]),
        Some(b'B') => base32(&text[1..]),
        Some(b'z') => base58(&text[1..]),
        Some(b'f') => hex(&text[1..]),
        _ => None,
    };
    let bytes = decoded.ok_or_else(bad)?;
    // CIDv1: version 1, a codec, then the multihash.
    if let Some((1, rest)) = varint(&bytes) {
        if let Some((_, mh)) = varint(rest) {
            if let Some(mh) = multihash(mh) {
                return Ok(mh);
            }
        }
    }
    multihash(&bytes).ok_or_else(bad)
}

/// A record key: `/pk/<peer id>` becomes `/pk/` + the peer id's bytes; other keys are taken
/// as written.
pub fn record_key(text: &str) -> Result<Vec<u8>, String> {
    if !text.starts_with('/') || text.len() < 3 {
        return Err(format!("record keys are /<namespace>/<name>, got {text:?}"));
    }
    if let Some(id) = text.strip_prefix("/pk/") {
        let peer: libp2p::PeerId = id
            .parse()
            .map_err(|_| format!("/pk/ keys name a peer id, got {id:?}"))?;
        let mut key = b"/pk/".to_vec();
        key.extend(peer.to_bytes());
        return Ok(key);
    }
    Ok(text.as_bytes().to_vec())
}

/// A lookup target: a peer id, a CID or multihash, or any text.
pub fn any_key(text: &str) -> Vec<u8> {
    if let Ok(peer) = text.parse::<libp2p::PeerId>() {
        return peer.to_bytes();
    }
    provider_key(text).unwrap_or_else(|_| text.as_bytes().to_vec())
}
