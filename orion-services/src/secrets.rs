//! Secrets at rest: repository credentials are sealed with ChaCha20-Poly1305 under a key
//! from the environment before they reach the store, and opened only by the VCS service.
//!
//! A sealed value is `base64(nonce ‖ ciphertext)`; a fresh random nonce per value. The key
//! is 32 bytes, given base64-encoded (`openssl rand -base64 32`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
pub use secrecy::{ExposeSecret, SecretString};

const NONCE_BYTES: usize = 12;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the credentials key must be 32 bytes, base64-encoded (openssl rand -base64 32)")]
    BadKey,
    #[error("no credentials key is configured (secrets.credentials_key)")]
    NoKey,
    #[error("a sealed secret does not open with this key (wrong key, or the value is damaged)")]
    Unsealable,
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// A sealer from a base64-encoded 32-byte key.
    pub fn from_base64(key: &SecretString) -> Result<Self, SecretError> {
        let bytes = STANDARD
            .decode(key.expose_secret().trim())
            .map_err(|_| SecretError::BadKey)?;
        let cipher = ChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        Ok(Self { cipher })
    }

    pub fn seal(&self, secret: &SecretString) -> String {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, secret.expose_secret().as_bytes())
            .expect("ChaCha20-Poly1305 encrypts any input of this size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, SecretError> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| SecretError::Unsealable)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SecretError::Unsealable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError::Unsealable)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Unsealable)
    }
}

/// `bytes` random bytes from the operating system, base64url without padding: the secret
/// part of API keys.
pub fn random_token(bytes: usize) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretString {
        STANDARD.encode([byte; 32]).into()
    }

    #[test]
    fn a_sealed_secret_opens_with_its_key_only_and_hides_the_clear_text() {
        let sealer = Sealer::from_base64(&key(7)).unwrap();
        let sealed = sealer.seal(&"ghp_secret-token".into());
        assert!(!sealed.contains("secret-token"));
        assert_ne!(
            sealed,
            sealer.seal(&"ghp_secret-token".into()),
            "fresh nonce"
        );
        assert_eq!(
            sealer.open(&sealed).unwrap().expose_secret(),
            "ghp_secret-token"
        );
        let other = Sealer::from_base64(&key(8)).unwrap();
        assert!(matches!(other.open(&sealed), Err(SecretError::Unsealable)));
        assert!(matches!(sealer.open("AAAA"), Err(SecretError::Unsealable)));
        assert!(matches!(
            Sealer::from_base64(&"c2hvcnQ=".into()),
            Err(SecretError::BadKey)
        ));
    }
}
