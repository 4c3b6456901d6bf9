//! Peer authentication: the cluster key and the keyed MAC that proves a datagram came from a
//! member holding it (`docs/security.md`).
//!
//! Without a key anyone who can reach a node's UDP port can forge Paxos messages (the sender id
//! and the source address are both forgeable). With `--cluster-key-file`, every datagram carries
//! an HMAC-SHA-256 tag, truncated to its first [`MAC_TAG_BYTES`] bytes (RFC 2104 §5 allows
//! truncation to at least half the hash; 128 bits leave forgery at 2⁻¹²⁸ per try), computed over
//! every byte in front of it: header (with the MAC flag set) and payload. The codec places and
//! checks the tag; this module owns the key (loading, validation) and the MAC itself, and nothing
//! else.
//!
//! **The key file** holds the key as raw bytes, taken exactly as they are (no trimming, no
//! decoding): at least [`CLUSTER_KEY_BYTES_MIN`], at most [`CLUSTER_KEY_BYTES_MAX`]. Binary
//! (`head -c 32 /dev/urandom`) and text (`openssl rand -hex 32`) keys both work as long as every
//! member has a byte-identical file. A file that others may read is accepted with a warning.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};

/// Bytes of the MAC tag appended to every keyed datagram (HMAC-SHA-256 truncated to 128 bits).
pub const MAC_TAG_BYTES: usize = 16;
/// The shortest accepted key, in bytes: 256 bits, HMAC-SHA-256's full strength.
pub const CLUSTER_KEY_BYTES_MIN: usize = 32;
/// The longest accepted key file, in bytes: a bound on what start-up reads, not a strength limit.
pub const CLUSTER_KEY_BYTES_MAX: usize = 4096;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the cluster key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the cluster key file {path} holds {len} bytes; at least {CLUSTER_KEY_BYTES_MIN} are \
         needed (make one with: head -c 32 /dev/urandom > {path}; chmod 600 {path})",
        path = path.display()
    )]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "the cluster key file {path} is longer than {CLUSTER_KEY_BYTES_MAX} bytes; is it the \
         right file?",
        path = path.display()
    )]
    TooLong { path: PathBuf },
}

/// The shared secret of a cluster, ready to tag and verify datagrams.
///
/// Holds an HMAC state already keyed, so each datagram only clones it instead of re-hashing the
/// key. `Debug` never shows the key.
#[derive(Clone)]
pub struct ClusterKey {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<secret>)")
    }
}

impl ClusterKey {
    /// A key from its bytes; refuses keys shorter than [`CLUSTER_KEY_BYTES_MIN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<ClusterKey> {
        if bytes.len() < CLUSTER_KEY_BYTES_MIN || bytes.len() > CLUSTER_KEY_BYTES_MAX {
            return None;
        }
        // HMAC accepts keys of any length, so this cannot fail; map it to None all the same.
        let keyed = Hmac::<Sha256>::new_from_slice(bytes).ok()?;
        Some(ClusterKey { keyed })
    }

    /// Reads a key file (see the module docs for its format).
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_err)?;
        if metadata.len() > CLUSTER_KEY_BYTES_MAX as u64 {
            return Err(KeyError::TooLong {
                path: path.to_path_buf(),
            });
        }
        warn_if_others_may_read(path, &metadata);
        let bytes = std::fs::read(path).map_err(read_err)?;
        if bytes.len() > CLUSTER_KEY_BYTES_MAX {
            return Err(KeyError::TooLong {
                path: path.to_path_buf(),
            });
        }
        ClusterKey::from_bytes(&bytes).ok_or(KeyError::TooShort {
            path: path.to_path_buf(),
            len: bytes.len(),
        })
    }

    /// The tag of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; MAC_TAG_BYTES] {
        let mut mac = self.keyed.clone();
        mac.update(message);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; MAC_TAG_BYTES];
        tag.copy_from_slice(&full[..MAC_TAG_BYTES]);
        tag
    }

    /// True if `tag` is the tag of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        if tag.len() != MAC_TAG_BYTES {
            return false;
        }
        let mut mac = self.keyed.clone();
        mac.update(message);
        mac.verify_truncated_left(tag).is_ok()
    }
}

#[cfg(unix)]
fn warn_if_others_may_read(path: &Path, metadata: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    /// Group and other permission bits.
    const MODE_GROUP_OTHER: u32 = 0o077;
    let mode = metadata.permissions().mode();
    if mode & MODE_GROUP_OTHER != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the cluster key file is accessible to other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_others_may_read(_path: &Path, _metadata: &std::fs::Metadata) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_keys_are_refused() {
        assert!(ClusterKey::from_bytes(&[7u8; CLUSTER_KEY_BYTES_MIN - 1]).is_none());
        assert!(ClusterKey::from_bytes(&[7u8; CLUSTER_KEY_BYTES_MIN]).is_some());
        assert!(ClusterKey::from_bytes(&[7u8; CLUSTER_KEY_BYTES_MAX + 1]).is_none());
    }

    #[test]
    fn tags_depend_on_key_and_message_and_verify() {
        let a = ClusterKey::from_bytes(&[1u8; 32]).expect("key");
        let b = ClusterKey::from_bytes(&[2u8; 32]).expect("key");
        let tag = a.tag(b"message");
        assert!(a.verify(b"message", &tag));
        assert!(!b.verify(b"message", &tag));
        assert!(!a.verify(b"messagf", &tag));
        assert!(!a.verify(b"message", &tag[..MAC_TAG_BYTES - 1]));
        assert_ne!(a.tag(b"message"), b.tag(b"message"));
        assert_eq!(format!("{a:?}"), "ClusterKey(<secret>)");
    }

    /// The construction is plain HMAC-SHA-256, truncated to its first `MAC_TAG_BYTES` bytes.
    #[test]
    fn construction_is_hmac_sha256_truncated() {
        let key = [0x0bu8; 32];
        let ours = ClusterKey::from_bytes(&key).expect("key").tag(b"Hi There");
        let mut reference = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        reference.update(b"Hi There");
        let full = reference.finalize().into_bytes();
        assert_eq!(&ours[..], &full[..MAC_TAG_BYTES]);
    }

    #[test]
    fn load_reads_files_and_names_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.key");
        std::fs::write(&good, [9u8; 40]).expect("write");
        assert!(ClusterKey::load(&good).is_ok());
        let short = dir.path().join("short.key");
        std::fs::write(&short, b"secret\n").expect("write");
        let err = ClusterKey::load(&short).expect_err("too short");
        assert!(err.to_string().contains("7 bytes"), "{err}");
        let long = dir.path().join("long.key");
        std::fs::write(&long, vec![1u8; CLUSTER_KEY_BYTES_MAX + 1]).expect("write");
        assert!(matches!(
            ClusterKey::load(&long),
            Err(KeyError::TooLong { .. })
        ));
        let missing = dir.path().join("missing.key");
        assert!(matches!(
            ClusterKey::load(&missing),
            Err(KeyError::Read { .. })
        ));
    }
}
