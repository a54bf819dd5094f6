//! SHA-256 as lowercase hex: the one digest Orion names things by (model cache keys, cached
//! clones, API keys in the store).

use sha2::{Digest, Sha256};

/// SHA-256 of `parts`, fed in order, as 64 lowercase hex characters.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_digest_of_the_empty_input_is_the_known_one() {
        assert_eq!(
            super::sha256_hex(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            super::sha256_hex(&[b"ab", b"c"]),
            super::sha256_hex(&[b"abc"])
        );
    }
}
