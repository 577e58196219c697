//! `publish` and `resolve`: an IPNS name signed with the node's key, read back from the DHT.

use std::time::Duration;

use kadence::ipns::{self, IpnsRecord};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;

use crate::crawl::{record as note, Acceleration};
use crate::oneshot::{get_record, join, print_result, put_record, Output};
use crate::{keys, units, Fail};

/// What `publish` signs and with which key.
pub struct PublishOptions {
    /// The content path the name points to, e.g. `/ipfs/bafy...`.
    pub value: String,
    /// The name's key: the `--key-file` or the data directory's identity.
    pub key: Keypair,
    /// How long the record stays valid (the library's default when `None`).
    pub lifetime: Option<Duration>,
    /// How long resolvers may cache it (the library's default when `None`).
    pub ttl: Option<Duration>,
}

/// The value a name points to: a path as given, or `/ipfs/<cid>` for a bare CID.
pub fn value_path(text: &str) -> Result<String, Fail> {
    if text.starts_with('/') && text.len() > 1 {
        return Ok(text.to_string());
    }
    keys::provider_key(text)
        .map(|_| format!("/ipfs/{text}"))
        .map_err(|_| {
            Fail::new(format!(
                "publish takes a path (/ipfs/<cid>) or a CID, got {text:?}"
            ))
        })
}

/// Prints a name's record in the form `resolve`, `get` and `publish` print: one field a line,
/// or one JSON object; with `--accelerated`, whether it was and the time.
fn describe(
    name: &PeerId,
    record: &IpnsRecord,
    json: bool,
    stored: Option<usize>,
    acceleration: Option<&Acceleration>,
) {
    let value = String::from_utf8_lossy(record.value());
    let validity = units::rfc3339(record.validity());
    let mut object = json!({
        "name": name.to_string(),
        "name_cid": keys::name_cid(name),
        "value": value,
        "sequence": record.sequence(),
        "validity": validity,
        "ttl_seconds": record.ttl().as_secs_f64(),
    });
    if let Some(peers) = stored {
        object["stored"] = json!(peers);
    }
    let text = || {
        let mut text = format!(
            "name:     {name}\n\
         cid:      {}\n\
         value:    {value}\n\
         sequence: {}\n\
         validity: {validity}\n\
         ttl:      {}",
            keys::name_cid(name),
            record.sequence(),
            units::format_duration(record.ttl()),
        );
        if let Some(peers) = stored {
            text.push_str(&format!("\nstored at {peers} peers"));
        }
        text
    };
    print_result(json, object, text, acceleration);
}

/// Prints a record `get_value` returned under an `/ipns/` key. The DHT's validator has
/// already checked it (signature, name, validity), so it is only decoded here.
pub fn print_record(
    key: &[u8],
    value: &[u8],
    json: bool,
    acceleration: Option<&Acceleration>,
) -> Result<(), Fail> {
    let name =
        ipns::name_from_routing_key(key).map_err(|e| Fail::new(format!("not an IPNS key: {e}")))?;
    let record = IpnsRecord::decode(value)
        .map_err(|e| Fail::new(format!("the record does not decode: {e}")))?;
    describe(&name, &record, json, None, acceleration);
    Ok(())
}

/// `resolve <name>`: the best record of the name on the DHT.
pub async fn resolve(name: PeerId, bootstrap: Vec<Multiaddr>, out: Output) -> Result<(), Fail> {
    let (node, mut acceleration) = join(&bootstrap, None, out).await?;
    let key = ipns::routing_key(&name);
    let (record, stats) = get_record(&node, key.clone()).await?;
    note(&mut acceleration, &stats);
    let record = record.ok_or_else(|| Fail::new(format!("no record for /ipns/{name}")))?;
    print_record(&key, &record.value, out.json, acceleration.as_ref())
}

/// `publish <value-path>`: signs a record one sequence number above the best one on the DHT
/// (0 for a new name) and stores it at the closest peers.
pub async fn publish(
    options: PublishOptions,
    bootstrap: Vec<Multiaddr>,
    out: Output,
) -> Result<(), Fail> {
    // The swarm has its own, throwaway identity: the name's key may be a running `serve`
    // node's, and two connections under one peer id would confuse the peers.
    let (node, mut acceleration) = join(&bootstrap, None, out).await?;
    let name = options.key.public().to_peer_id();
    let key = ipns::routing_key(&name);
    let (current, stats) = get_record(&node, key).await?;
    note(&mut acceleration, &stats);
    let sequence = match current {
        None => 0,
        Some(current) => IpnsRecord::decode(&current.value)
            .map_err(|e| Fail::new(format!("the current record does not decode: {e}")))?
            .sequence()
            .checked_add(1)
            .ok_or_else(|| Fail::new("the name's sequence number is at its maximum"))?,
    };
    let mut builder = IpnsRecord::builder(options.value).sequence(sequence);
    if let Some(lifetime) = options.lifetime {
        builder = builder.valid_for(lifetime);
    }
    if let Some(ttl) = options.ttl {
        builder = builder.ttl(ttl);
    }
    let record = builder
        .sign(&options.key)
        .map_err(|e| Fail::new(format!("cannot sign the record: {e}")))?;
    let (stored, stats) = put_record(&node, record.to_dht_record(&name)).await?;
    note(&mut acceleration, &stats);
    describe(
        &name,
        &record,
        out.json,
        Some(stored),
        acceleration.as_ref(),
    );
    Ok(())
}
