//! How the etcd backend encodes its keys and values.

use crate::store::Manifest;
use sha2::{Digest, Sha256};

/// What every stored value starts with (then 32 bytes of SHA-256 of the body, then the body).
const MAGIC: &[u8; 4] = b"SVE1";

/// The `meta` value: the manifest and the number of event lines ever written.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    /// The layout's version (1).
    pub version: u32,
    /// What has been acknowledged.
    pub manifest: Manifest,
    /// The next event line's number.
    pub events_next: u64,
    /// Commits written: makes every commit's `meta` unique, so that a retried commit can tell whether its first
    /// attempt was applied.
    #[serde(default)]
    pub commits: u64,
}

/// `prefix` and `n` zero-padded to 20 digits, so that keys sort as numbers.
pub(crate) fn num_key(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:020}")
}

/// A value as stored: [`MAGIC`], the SHA-256 of `body`, `body`.
pub(crate) fn seal(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(MAGIC.len() + 32 + body.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&Sha256::digest(body));
    v.extend_from_slice(body);
    v
}

/// The body of a stored value, after checking its checksum.
pub(crate) fn unseal(v: &[u8]) -> Result<&[u8], String> {
    let rest = v.strip_prefix(MAGIC.as_slice()).ok_or("not a Sovra value (damaged header)")?;
    if rest.len() < 32 {
        return Err("truncated value".into());
    }
    let (sum, body) = rest.split_at(32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_round_trips_and_a_flipped_bit_is_caught() {
        let v = seal(b"hello");
        assert_eq!(unseal(&v).unwrap(), b"hello");
        let mut bad = v.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(unseal(&bad).unwrap_err(), "checksum mismatch");
        assert!(unseal(b"SVE1abc").is_err());
        assert!(unseal(b"{}").is_err());
        assert_eq!(num_key("job/", 7), "job/00000000000000000007");
    }
}
