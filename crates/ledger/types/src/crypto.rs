//! Hashes and ed25519 keys.

use ed25519_zebra::{SigningKey, VerificationKey, VerificationKeyBytes, batch};
use rand_core::SeedableRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Lower-case hex of 32 bytes. Account keys and hashes are hex in state keys and JSON values, so
/// this runs several times per executed transaction; `hex::encode` builds the string one `char`
/// at a time (a few percent of a validator's CPU in the ledger bench's profile), a fixed buffer
/// does not.
fn hex32(bytes: &[u8; 32]) -> String {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(bytes, &mut buf).expect("64 bytes hold 32 in hex");
    String::from_utf8(buf.to_vec()).expect("hex is ASCII")
}

/// A 32-byte BLAKE3 digest. Serialised as lowercase hex.
///
/// BLAKE3 rather than SHA-256: this machine class has no SHA extensions, and hashing (state trie,
/// transaction and block hashes) was half the cost of executing a transaction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash (the parent of genesis, the root of an empty map).
    pub const ZERO: Hash = Hash([0; 32]);

    /// BLAKE3 of the concatenation of `parts`.
    pub fn of(parts: &[&[u8]]) -> Hash {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        Hash(*h.finalize().as_bytes())
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Hash> {
        let v = hex::decode(s).ok()?;
        Some(Hash(v.try_into().ok()?))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
    }
}

/// An ed25519 public key (32 bytes), the identity of an account or a validator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<PublicKey> {
        let v = hex::decode(s).ok()?;
        Some(PublicKey(v.try_into().ok()?))
    }
}
impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
    }
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &hex::encode(self.0)[..16])
    }
}

impl Signature {
    /// Lowercase hex (128 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 128 hex characters.
    pub fn from_hex(s: &str) -> Option<Signature> {
        let v = hex::decode(s).ok()?;
        Some(Signature(v.try_into().ok()?))
    }
}
impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Signature::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 128 hex characters"))
    }
}

/// An ed25519 signing key for an account.
#[derive(Clone)]
pub struct Keypair {
    inner: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

impl Keypair {
    /// The key for a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            inner: SigningKey::from(seed),
        }
    }
    /// A deterministic key for tests and simulations (never for real accounts).
    pub fn from_test_index(i: u64) -> Self {
        Self::from_seed(Hash::of(&[b"phoenix-test-key", &i.to_be_bytes()]).0)
    }
    /// The 32-byte secret seed.
    pub fn seed(&self) -> [u8; 32] {
        self.inner.to_bytes()
    }
    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(<[u8; 32]>::from(self.inner.verification_key()))
    }
    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.inner.sign(msg).to_bytes())
    }
}

/// Verifies one signature under the ZIP-215 rules, which single and batch verification share,
/// so every node reaches the same verdict whichever path it takes.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
    let Ok(vk) = VerificationKey::try_from(key.0) else {
        return false;
    };
    vk.verify(&ed25519_zebra::Signature::from_bytes(&sig.0), msg)
        .is_ok()
}

/// The random coefficients of one batch check: a ChaCha20 stream seeded from the operating
/// system for each batch, so a signer cannot predict them (a forged signature that cancels out
/// in the batch equation needs them in advance), asking the system for 32 bytes per batch
/// rather than 16 per signature. `None` if the system has no randomness to give: then the
/// caller checks one by one, which needs none (predictable coefficients would be unsafe).
fn batch_rng() -> Option<rand_chacha::ChaCha20Rng> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).ok()?;
    Some(rand_chacha::ChaCha20Rng::from_seed(seed))
}

/// Verifies many signatures at once, about twice as fast per signature as one by one.
///
/// Returns one verdict per item. When the batch fails, it falls back to checking each item so an
/// invalid signature only condemns itself.
pub fn verify_many(items: &[(PublicKey, &[u8], Signature)]) -> Vec<bool> {
    let rng = if items.len() < 4 { None } else { batch_rng() };
    let Some(rng) = rng else {
        return items.iter().map(|(k, m, s)| verify(k, m, s)).collect();
    };
    let mut v = batch::Verifier::new();
    for (k, m, s) in items {
        v.queue((
            VerificationKeyBytes::from(k.0),
            ed25519_zebra::Signature::from_bytes(&s.0),
            *m,
        ));
    }
    if v.verify(rng).is_ok() {
        vec![true; items.len()]
    } else {
        items.iter().map(|(k, m, s)| verify(k, m, s)).collect()
    }
}
