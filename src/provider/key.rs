//! The key of a provider record, typed so that a CID cannot be announced where its multihash
//! is meant.
//!
//! The Amino DHT keys provider records by the **multihash** of the content, not by its CID:
//! Kubo announces and looks up `cid.hash()`, so that a CIDv0 and a CIDv1 of the same content
//! (or the same bytes under another codec) meet the same providers. Announcing the bytes of a
//! CID, or of its string, announces a different key that no other implementation will ever
//! ask for. [`ProviderKey`] is that multihash, checked: it is built from a multihash, from a
//! CID (whose multihash it takes), or from bytes that must parse as a multihash. The wire
//! carries [`ProviderKey::as_bytes`], the multihash.

use std::fmt;

use libp2p::multihash::Multihash;

/// The multicodec of a CIDv1's version byte: a multihash with this code is a CID's bytes.
const CIDV1: u64 = 0x01;
/// The multihash code of SHA2-256 and its digest length: a CIDv0 is exactly such a multihash.
const SHA2_256: u64 = 0x12;

/// The key of a provider record: a multihash. The Amino DHT keys provider records by the
/// multihash of the content, not by its CID: Kubo announces `cid.hash()`, so that every CID of
/// the same content meets the same providers, and the bytes of a CID are a key no other
/// implementation asks for. The wire carries [`ProviderKey::as_bytes`].
///
/// ```
/// use kadence::ProviderKey;
/// use libp2p::multihash::Multihash;
///
/// let digest = [7u8; 32];
/// // From a multihash (code 0x12: SHA2-256).
/// let key = ProviderKey::from(Multihash::<64>::wrap(0x12, &digest).unwrap());
/// // A CIDv1 (version 1, codec raw 0x55, then the multihash) gives the same key...
/// let mut cid = vec![0x01, 0x55];
/// cid.extend_from_slice(key.as_bytes());
/// assert_eq!(ProviderKey::from_cid_bytes(&cid).unwrap(), key);
/// // ...but passed as a multihash it is refused rather than announced under the wrong key.
/// assert!(ProviderKey::from_multihash_bytes(cid).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderKey(Vec<u8>);

/// Why bytes are not a [`ProviderKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProviderKey {
    /// No bytes at all.
    #[error("empty provider key")]
    Empty,
    /// The multihash's code or length varint is cut short or malformed.
    #[error("not a multihash: malformed code or length")]
    Malformed,
    /// The multihash says its digest has `declared` bytes; `actual` follow.
    #[error("not a multihash: digest of {declared} bytes declared, {actual} present")]
    LengthMismatch {
        /// The length the multihash declares.
        declared: u64,
        /// The bytes after the header.
        actual: usize,
    },
    /// The bytes are a CIDv1, whose multihash is the key: use
    /// [`ProviderKey::from_cid_bytes`].
    #[error(
        "a CIDv1 where a multihash is expected: take its multihash (ProviderKey::from_cid_bytes)"
    )]
    Cid,
    /// A CID of a version this crate does not know.
    #[error("unsupported CID version {0}")]
    UnsupportedCidVersion(u64),
}

impl ProviderKey {
    /// A key from the bytes of a multihash (`<code varint><length varint><digest>`), checked;
    /// a CIDv1 is refused ([`InvalidProviderKey::Cid`]).
    pub fn from_multihash_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, InvalidProviderKey> {
        let bytes = bytes.into();
        let code = check_multihash(&bytes)?;
        if code == CIDV1 {
            return Err(InvalidProviderKey::Cid);
        }
        Ok(Self(bytes))
    }

    /// The key of a binary CID: its multihash. A CIDv0 is a SHA2-256 multihash already; a
    /// CIDv1 is `<version 1><codec varint><multihash>`.
    pub fn from_cid_bytes(bytes: &[u8]) -> Result<Self, InvalidProviderKey> {
        if bytes.len() == 34 && bytes[0] == SHA2_256 as u8 && bytes[1] == 32 {
            return Ok(Self(bytes.to_vec()));
        }
        let (version, rest) =
            unsigned_varint::decode::u64(bytes).map_err(|_| InvalidProviderKey::Malformed)?;
        if version != CIDV1 {
            return Err(InvalidProviderKey::UnsupportedCidVersion(version));
        }
        let (_codec, multihash) =
            unsigned_varint::decode::u64(rest).map_err(|_| InvalidProviderKey::Malformed)?;
        check_multihash(multihash)?;
        Ok(Self(multihash.to_vec()))
    }

    /// The key of raw content: the SHA2-256 multihash of `data`, as a CIDv1 of raw bytes (or
    /// the CIDv0 of a block) names it.
    pub fn sha2_256(data: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&[SHA2_256 as u8, 32]);
        bytes.extend_from_slice(&Sha256::digest(data));
        Self(bytes)
    }

    /// The multihash's bytes: what goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The multihash's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The multihash, for digests of up to 64 bytes (every hash function in use).
    pub fn to_multihash(&self) -> Option<Multihash<64>> {
        Multihash::from_bytes(&self.0).ok()
    }

    /// A key read back from our own provided-keys list or from a sweep: checked when it was
    /// added, or (lists of earlier versions) announced as it is.
    pub(crate) fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

/// Checks `<code><length><digest>`; returns the code.
fn check_multihash(bytes: &[u8]) -> Result<u64, InvalidProviderKey> {
    if bytes.is_empty() {
        return Err(InvalidProviderKey::Empty);
    }
    let (code, rest) =
        unsigned_varint::decode::u64(bytes).map_err(|_| InvalidProviderKey::Malformed)?;
    let (declared, digest) =
        unsigned_varint::decode::u64(rest).map_err(|_| InvalidProviderKey::Malformed)?;
    if declared != digest.len() as u64 {
        return Err(InvalidProviderKey::LengthMismatch {
            declared,
            actual: digest.len(),
        });
    }
    Ok(code)
}

impl<const S: usize> From<Multihash<S>> for ProviderKey {
    fn from(multihash: Multihash<S>) -> Self {
        Self(multihash.to_bytes())
    }
}

impl<const S: usize> From<&Multihash<S>> for ProviderKey {
    fn from(multihash: &Multihash<S>) -> Self {
        Self(multihash.to_bytes())
    }
}

impl From<&ProviderKey> for ProviderKey {
    fn from(key: &ProviderKey) -> Self {
        key.clone()
    }
}

impl TryFrom<&[u8]> for ProviderKey {
    type Error = InvalidProviderKey;

    /// The bytes of a multihash, as [`ProviderKey::from_multihash_bytes`].
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::from_multihash_bytes(bytes)
    }
}

impl TryFrom<Vec<u8>> for ProviderKey {
    type Error = InvalidProviderKey;

    /// The bytes of a multihash, as [`ProviderKey::from_multihash_bytes`].
    fn try_from(bytes: Vec<u8>) -> Result<Self, Self::Error> {
        Self::from_multihash_bytes(bytes)
    }
}

impl From<ProviderKey> for Vec<u8> {
    fn from(key: ProviderKey) -> Self {
        key.0
    }
}

impl AsRef<[u8]> for ProviderKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderKey({self})")
    }
}

impl fmt::Display for ProviderKey {
    /// The multihash in hexadecimal (`1220…` for SHA2-256).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(feature = "cid")]
mod with_cid {
    use super::ProviderKey;

    impl From<&cid::Cid> for ProviderKey {
        /// The CID's multihash: what Kubo announces for it.
        fn from(cid: &cid::Cid) -> Self {
            Self(cid.hash().to_bytes())
        }
    }

    impl From<cid::Cid> for ProviderKey {
        /// The CID's multihash: what Kubo announces for it.
        fn from(cid: cid::Cid) -> Self {
            Self::from(&cid)
        }
    }

    impl std::str::FromStr for ProviderKey {
        type Err = cid::Error;

        /// Parses a CID string (`Qm…`, `bafy…`, any multibase) and takes its multihash.
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            Ok(Self::from(&cid::Cid::try_from(s)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_multihash(byte: u8) -> Vec<u8> {
        let mut bytes = vec![0x12, 32];
        bytes.extend_from_slice(&[byte; 32]);
        bytes
    }

    #[test]
    fn a_multihash_is_a_key_as_it_is() {
        let bytes = sha256_multihash(1);
        let key = ProviderKey::from_multihash_bytes(bytes.clone()).unwrap();
        assert_eq!(key.as_bytes(), &bytes[..]);
        assert_eq!(key.to_multihash().unwrap().code(), 0x12);
        assert_eq!(ProviderKey::from(key.to_multihash().unwrap()), key);
        // Identity multihashes (code 0) hold the data itself; empty digests are valid too.
        assert!(ProviderKey::from_multihash_bytes(vec![0x00, 0x00]).is_ok());
        let hashed = ProviderKey::sha2_256(b"hello");
        assert_eq!(
            ProviderKey::from_multihash_bytes(hashed.as_bytes()).unwrap(),
            hashed
        );
    }

    #[test]
    fn cid_bytes_and_strings_are_not_multihashes() {
        let mh = sha256_multihash(2);
        for codec in [0x55u8, 0x70, 0x71] {
            let mut cid = vec![0x01, codec];
            cid.extend_from_slice(&mh);
            assert!(ProviderKey::from_multihash_bytes(cid.clone()).is_err());
            assert_eq!(
                ProviderKey::from_cid_bytes(&cid).unwrap().as_bytes(),
                &mh[..]
            );
        }
        // The bytes of CID strings, the mistake the type exists to catch.
        for text in [
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        ] {
            assert!(ProviderKey::from_multihash_bytes(text.as_bytes()).is_err());
        }
        // A CIDv1 whose codec happens to equal the rest's length is still refused.
        let mut sneaky = vec![0x01, 34];
        sneaky.extend_from_slice(&mh);
        assert_eq!(
            ProviderKey::from_multihash_bytes(sneaky),
            Err(InvalidProviderKey::Cid)
        );
    }

    #[test]
    fn a_cidv0_is_its_multihash() {
        let mh = sha256_multihash(3);
        assert_eq!(
            ProviderKey::from_cid_bytes(&mh).unwrap().as_bytes(),
            &mh[..]
        );
        assert_eq!(
            ProviderKey::from_cid_bytes(&[0x02, 0x55, 0x00, 0x00]),
            Err(InvalidProviderKey::UnsupportedCidVersion(2))
        );
    }

    #[test]
    fn malformed_bytes_are_refused_with_a_reason() {
        assert_eq!(
            ProviderKey::from_multihash_bytes(Vec::new()),
            Err(InvalidProviderKey::Empty)
        );
        assert_eq!(
            ProviderKey::from_multihash_bytes(vec![0x12]),
            Err(InvalidProviderKey::Malformed)
        );
        assert_eq!(
            ProviderKey::from_multihash_bytes(vec![0x12, 32, 1, 2]),
            Err(InvalidProviderKey::LengthMismatch {
                declared: 32,
                actual: 2
            })
        );
    }

    #[cfg(feature = "cid")]
    #[test]
    fn cid_strings_parse_to_their_multihash() {
        let v0: ProviderKey = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
            .parse()
            .unwrap();
        let cid = cid::Cid::try_from("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG").unwrap();
        let v1 = cid::Cid::new_v1(0x70, *cid.hash());
        let v1: ProviderKey = v1.to_string().parse().unwrap();
        assert_eq!(v0, v1);
        assert_eq!(v0.as_bytes()[..2], [0x12, 32]);
    }
}
