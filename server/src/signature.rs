//! Publisher signatures on plugins (Ed25519).
//!
//! A publisher signs the sha256 of the component together with the sha256 of
//! the manifest it ships with (the one embedded in the component, or a
//! separate file), under a domain string so the signature means nothing
//! anywhere else. The operator registers publishers' public keys; a plugin is
//! accepted only if its signature verifies against one of them.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use sovra_runtime::Digest;

/// Prefix of every signed message.
pub const SIGNATURE_DOMAIN: &str = "sovra-plugin-signature-v1";

/// Why signing material could not be used or a signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not valid: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("the signature was made by publisher {found}, not {expected}")]
    WrongPublisher { expected: String, found: String },
    #[error("the component digest does not match the signed one (signed {signed}, got {actual})")]
    ComponentChanged { signed: String, actual: String },
    #[error("the manifest does not match the signed one")]
    ManifestChanged,
    #[error("the signature does not verify")]
    Invalid,
    #[error("cannot get randomness for a new key: {0}")]
    Randomness(String),
}

/// A publisher's secret signing key.
pub struct PublisherKey(SigningKey);

impl std::fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublisherKey({})", self.public().to_hex())
    }
}

/// A publisher's public key, as the operator registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherId(VerifyingKey);

/// A detached plugin signature, stored as JSON beside the component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSignature {
    /// sha256 of the component, hex.
    pub component: String,
    /// sha256 of the manifest, hex.
    pub manifest: String,
    /// The publisher's public key, hex.
    pub publisher: String,
    /// The Ed25519 signature, hex.
    pub signature: String,
}

fn hex_array<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], SignatureError> {
    let bytes = hex::decode(text.trim()).map_err(|e| SignatureError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| SignatureError::Malformed {
            what,
            reason: format!("{} bytes instead of {N}", b.len()),
        })
}

fn message(component: &str, manifest: &str) -> Vec<u8> {
    format!("{SIGNATURE_DOMAIN}\ncomponent sha256:{component}\nmanifest sha256:{manifest}\n")
        .into_bytes()
}

impl PublisherKey {
    /// A new random key.
    pub fn generate() -> Result<Self, SignatureError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| SignatureError::Randomness(e.to_string()))?;
        Ok(PublisherKey(SigningKey::from_bytes(&secret)))
    }

    pub fn public(&self) -> PublisherId {
        PublisherId(self.0.verifying_key())
    }

    /// Writes the key as hex, readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<(), SignatureError> {
        let io = |source| SignatureError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        std::io::Write::write_all(
            &mut file,
            format!("{}\n", hex::encode(self.0.to_bytes())).as_bytes(),
        )
        .map_err(io)
    }

    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignatureError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(PublisherKey(SigningKey::from_bytes(&hex_array(
            "the secret key",
            &text,
        )?)))
    }

    /// Signs a component and the manifest it ships with.
    pub fn sign(&self, component: &[u8], manifest: &[u8]) -> PluginSignature {
        let (component, manifest) = (
            Digest::of(component).to_hex(),
            Digest::of(manifest).to_hex(),
        );
        let signature = self.0.sign(&message(&component, &manifest));
        PluginSignature {
            component,
            manifest,
            publisher: self.public().to_hex(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

impl PublisherId {
    /// Reads a public key, refusing what is not one a publisher could hold:
    /// bytes that are not a point on the curve, a point written in a
    /// non-canonical encoding (two hex strings for one key), and weak keys of
    /// small order, for which a signature can be forged without the secret.
    pub fn from_hex(text: &str) -> Result<Self, SignatureError> {
        let bytes = hex_array("the public key", text)?;
        let malformed = |reason: String| SignatureError::Malformed {
            what: "the public key",
            reason,
        };
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| malformed("it is not a point on the Ed25519 curve".into()))?;
        if key.to_edwards().compress().to_bytes() != bytes {
            return Err(malformed(
                "it is not the canonical encoding of an Ed25519 point".into(),
            ));
        }
        if key.is_weak() {
            return Err(malformed(
                "it is a weak key of small order, which verifies forged signatures".into(),
            ));
        }
        Ok(PublisherId(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// Checks that `signature` is this publisher's, over exactly these bytes.
    pub fn verify(
        &self,
        signature: &PluginSignature,
        component: &[u8],
        manifest: &[u8],
    ) -> Result<(), SignatureError> {
        if signature.publisher != self.to_hex() {
            return Err(SignatureError::WrongPublisher {
                expected: self.to_hex(),
                found: signature.publisher.clone(),
            });
        }
        let actual = Digest::of(component).to_hex();
        if signature.component != actual {
            return Err(SignatureError::ComponentChanged {
                signed: signature.component.clone(),
                actual,
            });
        }
        if signature.manifest != Digest::of(manifest).to_hex() {
            return Err(SignatureError::ManifestChanged);
        }
        let bytes: [u8; 64] = hex_array("the signature", &signature.signature)?;
        self.0
            .verify_strict(
                &message(&signature.component, &signature.manifest),
                &Signature::from_bytes(&bytes),
            )
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_any_change_breaks_them() {
        let key = PublisherKey::generate().unwrap();
        let publisher = key.public();
        let (component, manifest) = (b"\0asm component bytes".to_vec(), b"name = \"x\"".to_vec());
        let signature = key.sign(&component, &manifest);
        publisher.verify(&signature, &component, &manifest).unwrap();

        let mut changed = component.clone();
        changed[5] ^= 1;
        assert!(matches!(
            publisher.verify(&signature, &changed, &manifest),
            Err(SignatureError::ComponentChanged { .. })
        ));
        assert!(matches!(
            publisher.verify(&signature, &component, b"name = \"y\""),
            Err(SignatureError::ManifestChanged)
        ));
        let stranger = PublisherKey::generate().unwrap().public();
        assert!(matches!(
            stranger.verify(&signature, &component, &manifest),
            Err(SignatureError::WrongPublisher { .. })
        ));

        let mut forged = signature.clone();
        forged.signature = hex::encode([7u8; 64]);
        assert!(matches!(
            publisher.verify(&forged, &component, &manifest),
            Err(SignatureError::Invalid)
        ));
        let mut swapped = key.sign(&changed, &manifest);
        swapped.signature = signature.signature.clone();
        assert!(publisher.verify(&swapped, &changed, &manifest).is_err());
    }

    #[test]
    fn keys_round_trip_through_files_and_refuse_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publisher.key");
        let key = PublisherKey::generate().unwrap();
        key.save(&path).unwrap();
        assert_eq!(PublisherKey::load(&path).unwrap().public(), key.public());
        assert!(
            key.save(&path).is_err(),
            "an existing key is never overwritten"
        );
        std::fs::write(dir.path().join("bad.key"), "zz").unwrap();
        assert!(PublisherKey::load(&dir.path().join("bad.key")).is_err());
        assert!(PublisherId::from_hex("abcd").is_err());
    }

    #[test]
    fn keys_that_are_not_canonical_curve_points_or_are_weak_are_refused() {
        let refused = |hex: String| {
            let error = PublisherId::from_hex(&hex).expect_err(&hex).to_string();
            assert!(error.contains("the public key"), "{hex}: {error}");
        };
        // All ones: y = 2^255 - 1 is not below the field prime.
        refused("ff".repeat(32));
        // The identity point (y = 1), and y = 0: small order.
        refused(format!("01{}", "00".repeat(31)));
        refused("00".repeat(32));
        // y = -1 (p - 1): the point of order 2.
        refused(format!("ec{}7f", "ff".repeat(30)));
        // y = p + 1: the identity again, written non-canonically.
        refused(format!("ee{}7f", "ff".repeat(30)));
        // No point has this y: x^2 would have to be a non-square.
        let mut off_curve = None;
        for y in 2u8..=255 {
            let hex = format!("{y:02x}{}", "00".repeat(31));
            if VerifyingKey::from_bytes(&hex_array::<32>("k", &hex).unwrap()).is_err() {
                off_curve = Some(hex);
                break;
            }
        }
        refused(off_curve.expect("some small y is off the curve"));
        // A real key still reads back as itself.
        let real = PublisherKey::generate().unwrap().public().to_hex();
        assert_eq!(PublisherId::from_hex(&real).unwrap().to_hex(), real);
    }
}
