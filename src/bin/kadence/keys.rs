//! Keys as people paste them: CIDs (v0 `Qm...`, v1 in any multibase: `b...`, `k...`, `z...`,
//! `f...`), multihashes (hex or base58), peer ids, and `/namespace/...` record keys.

use libp2p::PeerId;
use multibase::Base;

/// The multicodec of a CID that names a peer's public key (an IPNS name).
const LIBP2P_KEY: u64 = 0x72;

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

/// Splits a binary CIDv1 into its codec and multihash.
fn cid_v1(bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
    let (1, rest) = varint(bytes)? else {
        return None;
    };
    let (codec, mh) = varint(rest)?;
    Some((codec, multihash(mh)?))
}

/// The multihash a provider key is made of, from a CID or a multihash.
pub fn provider_key(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let bad = || format!("not a CID or multihash: {text:?}");
    // CIDv0: a base58 sha2-256 multihash.
    if text.len() == 46 && text.starts_with("Qm") {
        return Base::Base58Btc
            .decode(text)
            .ok()
            .and_then(|b| multihash(&b))
            .ok_or_else(bad);
    }
    // A bare multihash in hex, without a multibase prefix.
    if let Some(bytes) = Base::Base16Lower
        .decode(text)
        .ok()
        .and_then(|b| multihash(&b))
    {
        return Ok(bytes);
    }
    let (_, bytes) = multibase::decode(text).map_err(|_| bad())?;
    if let Some((_, mh)) = cid_v1(&bytes) {
        return Ok(mh);
    }
    multihash(&bytes).ok_or_else(bad)
}

/// An IPNS name or a `/pk/` key's peer: a base58 peer id (`12D3Koo...`, `Qm...`) or a CIDv1
/// with the libp2p-key codec in any multibase (`k51...` base36, `bafz...` base32).
pub fn peer_name(text: &str) -> Result<PeerId, String> {
    if let Ok(peer) = text.parse::<PeerId>() {
        return Ok(peer);
    }
    let bad = || format!("not a peer id or a libp2p-key CID: {text:?}");
    let (_, bytes) = multibase::decode(text).map_err(|_| bad())?;
    let (codec, mh) = cid_v1(&bytes).ok_or_else(bad)?;
    if codec != LIBP2P_KEY {
        return Err(format!(
            "{text:?} is a CID with codec {codec:#x}, not a libp2p-key ({LIBP2P_KEY:#x}) name"
        ));
    }
    PeerId::from_bytes(&mh).map_err(|_| bad())
}

/// The CIDv1 form of a name, as Kubo prints it: libp2p-key codec, base36 (`k51...`).
pub fn name_cid(peer: &PeerId) -> String {
    let mut bytes = vec![1, LIBP2P_KEY as u8];
    bytes.extend(peer.to_bytes());
    multibase::encode(Base::Base36Lower, bytes)
}

/// A record key: `/pk/<name>` and `/ipns/<name>` become the namespace + the peer id's bytes
/// (the form on the wire); other keys are taken as written.
pub fn record_key(text: &str) -> Result<Vec<u8>, String> {
    if !text.starts_with('/') || text.len() < 3 {
        return Err(format!("record keys are /<namespace>/<name>, got {text:?}"));
    }
    for namespace in ["/pk/", "/ipns/"] {
        if let Some(name) = text.strip_prefix(namespace) {
            let peer = peer_name(name).map_err(|e| format!("{namespace} keys name a peer: {e}"))?;
            let mut key = namespace.as_bytes().to_vec();
            key.extend(peer.to_bytes());
            return Ok(key);
        }
    }
    Ok(text.as_bytes().to_vec())
}

/// A lookup target: a peer id, a CID or multihash, or any text.
pub fn any_key(text: &str) -> Vec<u8> {
    if let Ok(peer) = text.parse::<PeerId>() {
        return peer.to_bytes();
    }
    provider_key(text).unwrap_or_else(|_| text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One ed25519 name in its three spellings, and the same key as CIDs of other codecs;
    /// the CID forms were computed independently of this code (Python integer arithmetic).
    const ED25519_ID: &str = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK";
    const ED25519_K51: &str = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8";
    const ED25519_BAFZ: &str = "bafzaajaiaejcbzdibmxyzdjbbehgvizh6g5tikvy47mshdy6gwbruvgwvd24seje";
    const ED25519_DAG_PB_B32: &str =
        "bafyaajaiaejcbzdibmxyzdjbbehgvizh6g5tikvy47mshdy6gwbruvgwvd24seje";
    const ED25519_DAG_PB_B36: &str =
        "k50rm9yjlt0jgpsda4l8mc71y4p3ywu68fq4gezfbbkao4mv086nxxhxb7y52c";
    /// A sha2-256 peer id (an RSA key's), in each spelling.
    const RSA_ID: &str = "QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ";
    const RSA_K: &str = "k2k4r8nt6ygm063ccerz6oiefak0fx4hb7lah61nx4gpmkt5rtrqcet9";
    const RSA_BAFZ: &str = "bafzbeifqjjl5idwkcoeat4jzu5vrebcdgpbxia4rzg7rz2oy4inhsiil7u";
    const RSA_Z: &str = "zdvgqDH9PYvXQotwvmXjDBfBeXhrSMB72ncTUJmjLCDQm3UZ2";
    const RSA_F: &str = "f01721220b04a57d40eca138809f139a76b12044333c3740391c9bf1ce9d8e21a79210bfd";
    const RSA_RAW: &str = "bafkreifqjjl5idwkcoeat4jzu5vrebcdgpbxia4rzg7rz2oy4inhsiil7u";
    /// Version 2, libp2p-key codec.
    const RSA_CID_V2: &str = "bajzbeifqjjl5idwkcoeat4jzu5vrebcdgpbxia4rzg7rz2oy4inhsiil7u";
    /// libp2p-key codec around a sha3-256 multihash, which is no peer id.
    const SHA3_NAME: &str = "bafzbmifqjjl5idwkcoeat4jzu5vrebcdgpbxia4rzg7rz2oy4inhsiil7u";

    fn binary(namespace: &str, id: &str) -> Vec<u8> {
        let mut key = namespace.as_bytes().to_vec();
        key.extend(id.parse::<PeerId>().unwrap().to_bytes());
        key
    }

    #[test]
    fn every_spelling_of_a_name_is_the_same_binary_key() {
        let ipns = binary("/ipns/", ED25519_ID);
        for name in [
            ED25519_ID,
            ED25519_K51,
            ED25519_BAFZ,
            "K51QZI5UQU5DLVJ2BAXNQNDEPEB86CBK3NG7N3I46UZYXZYQJ2XJONZLLNV0V8",
        ] {
            assert_eq!(
                record_key(&format!("/ipns/{name}")).unwrap(),
                ipns,
                "{name}"
            );
        }
        let ipns = binary("/ipns/", RSA_ID);
        for name in [RSA_ID, RSA_K, RSA_BAFZ, RSA_Z, RSA_F] {
            assert_eq!(
                record_key(&format!("/ipns/{name}")).unwrap(),
                ipns,
                "{name}"
            );
        }
        let pk = binary("/pk/", ED25519_ID);
        for name in [ED25519_ID, ED25519_K51, ED25519_BAFZ] {
            assert_eq!(record_key(&format!("/pk/{name}")).unwrap(), pk, "{name}");
        }
        assert_eq!(
            record_key(&format!("/pk/{RSA_ID}")).unwrap(),
            binary("/pk/", RSA_ID)
        );
    }

    #[test]
    fn the_key_on_the_wire_is_the_namespace_and_the_multihash() {
        let key = record_key(&format!("/ipns/{ED25519_ID}")).unwrap();
        // `/ipns/`, then the identity multihash (0x00, 36 bytes) of the protobuf public key.
        assert_eq!(&key[..6], b"/ipns/");
        assert_eq!(&key[6..8], &[0x00, 0x24]);
        assert_eq!(key.len(), 6 + 2 + 36);
    }

    #[test]
    fn names_print_as_kubo_prints_them() {
        assert_eq!(name_cid(&ED25519_ID.parse().unwrap()), ED25519_K51);
        assert_eq!(name_cid(&RSA_ID.parse().unwrap()), RSA_K);
    }

    #[test]
    fn cids_of_other_codecs_are_refused_with_their_codec() {
        for (name, codec) in [
            (ED25519_DAG_PB_B32, "0x70"),
            (ED25519_DAG_PB_B36, "0x70"),
            (RSA_RAW, "0x55"),
        ] {
            let error = record_key(&format!("/ipns/{name}")).unwrap_err();
            assert!(
                error.contains(codec) && error.contains("libp2p-key"),
                "{error}"
            );
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }

    #[test]
    fn names_that_are_no_peer_are_refused() {
        for name in [
            "",
            "example.com",
            "not-a-name",
            RSA_CID_V2,
            SHA3_NAME,
            &ED25519_K51[..30],
            &format!("{ED25519_ID}/path"),
        ] {
            for namespace in ["/ipns/", "/pk/"] {
                let key = format!("{namespace}{name}");
                let error = record_key(&key).unwrap_err();
                assert!(error.starts_with(namespace), "{key}: {error}");
                assert_eq!(error.lines().count(), 1, "{error}");
            }
        }
    }

    #[test]
    fn lookup_targets_are_peer_ids_then_cids_then_text() {
        let peer: PeerId = ED25519_ID.parse().unwrap();
        assert_eq!(any_key(ED25519_ID), peer.to_bytes());
        assert_eq!(any_key(RSA_RAW), provider_key(RSA_RAW).unwrap());
        assert_eq!(any_key("some text"), b"some text");
    }

    #[test]
    fn other_namespaces_are_taken_as_written() {
        assert_eq!(record_key("/v/hello").unwrap(), b"/v/hello");
        assert!(record_key("no-namespace").is_err());
        assert!(record_key("/").is_err());
    }

    #[test]
    fn provider_keys_still_come_from_cids_and_multihashes() {
        let hex = "1220b04a57d40eca138809f139a76b12044333c3740391c9bf1ce9d8e21a79210bfd";
        let mh = Base::Base16Lower.decode(hex).unwrap();
        for text in [RSA_ID, RSA_RAW, RSA_BAFZ, RSA_K, RSA_F, hex] {
            assert_eq!(provider_key(text).unwrap(), mh, "{text}");
        }
        for text in ["not-a-cid", "", "1220b04a", RSA_CID_V2] {
            assert!(provider_key(text).is_err(), "{text}");
        }
    }
}
