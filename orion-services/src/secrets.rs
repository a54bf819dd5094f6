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

/// What stands in for a secret [`redact`] removed.
pub const REDACTED: &str = "[REDACTED]";

/// `text` with each of `known` (secrets held in clear, such as a configuration's) and then
/// whatever [`redact`] finds replaced by [`REDACTED`].
pub fn redact_known<'a>(text: &'a str, known: &[String]) -> std::borrow::Cow<'a, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for secret in known.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    match redact(&out) {
        std::borrow::Cow::Borrowed(_) => out,
        std::borrow::Cow::Owned(redacted) => std::borrow::Cow::Owned(redacted),
    }
}

/// `text` with what looks like a credential replaced by [`REDACTED`]: private key blocks,
/// the tokens of well-known services (GitHub, GitLab, OpenAI and Anthropic keys, AWS access
/// keys, Slack, Stripe, Google API keys), JSON Web Tokens, the password of a URL, and the
/// value given to a name that says it is secret (`password = …`, `API_TOKEN: …`). A
/// pattern list, not a proof: text that hides a secret in another shape keeps it.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
        let replace_all = [
            // A key block to its end, or to the end of the text where it was cut off.
            r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,})",
            r"\b(?:hf|gsk)_[A-Za-z0-9]{20,}",
            r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+",
            r"https://(?:discord|discordapp)\.com/api/webhooks/[A-Za-z0-9/_-]+",
            r"\b(?:sk|rk|pk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}",
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
            r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
            r"\bAIza[0-9A-Za-z_-]{35}\b",
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        ];
        let keep = [
            // The password of a URL: `scheme://user:password@host`; a long user alone is a
            // token.
            (
                r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@",
                "${keep}[REDACTED]@",
            ),
            (
                r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://)[A-Za-z0-9_.~-]{20,}@",
                "${keep}[REDACTED]@",
            ),
            // An HTTP credential: `Authorization: Basic …`, `Bearer …`.
            (
                r"(?i)(?P<keep>\bauthorization\s*:\s*(?:bearer|basic|token)\s+)[^\s\x22']{8,}",
                "${keep}[REDACTED]",
            ),
            (
                r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]{20,}",
                "${keep}[REDACTED]",
            ),
            // A value given to a secret-sounding name, quoted or not.
            (
                r#"(?i)(?P<keep>\b[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[A-Za-z0-9_.-]*["']?\s*[:=]\s*["']?)[^\s"',;]{4,}"#,
                "${keep}[REDACTED]",
            ),
        ];
        // A pattern that does not compile is a bug here, never a redaction quietly skipped.
        replace_all
            .iter()
            .map(|p| (*p, REDACTED))
            .chain(keep)
            .map(|(p, with)| {
                (
                    regex::Regex::new(p).expect("a valid credential pattern"),
                    with,
                )
            })
            .collect::<Vec<(regex::Regex, &'static str)>>()
    });
    let mut out = std::borrow::Cow::Borrowed(text);
    for (pattern, with) in PATTERNS.iter() {
        if let std::borrow::Cow::Owned(replaced) = pattern.replace_all(&out, *with) {
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every credential shape the table lists is found (a pattern that stopped matching
    /// would leave its kind of secret in exported data).
    #[test]
    fn each_listed_credential_shape_is_redacted() {
        for secret in [
            "hf_abcdefghijklmnopqrstuvwxyz012345",
            "gsk_abcdefghijklmnopqrstuvwxyz012345",
            "glpat-abcdefghijklmnopqrstu",
            "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
            "https://discord.com/api/webhooks/1234/abcdEFGH-ijkl",
            "xoxb-1234567890-abcdefghij",
            "sk_live_abcdefghijklmnop1234",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXBhcnQ",
            "Authorization: Basic dXNlcjpwYXNzd29yZA==",
            "Bearer abcdefghijklmnopqrstuvwxyz0123",
            "redis://someuserwithalongtokenname@host",
        ] {
            let text = format!("x {secret} y");
            let redacted = redact(&text);
            assert!(redacted.contains(REDACTED), "{secret}: {redacted}");
            assert!(
                !redacted.contains(&secret[secret.len() - 8..]),
                "{secret}: {redacted}"
            );
        }
    }

    #[test]
    fn credentials_are_redacted_and_code_is_kept() {
        let text = "\
API_TOKEN = \"ghp_abcdefghijklmnopqrstuvwxyz0123456789\"
openai = 'sk-proj-abcdefghijklmnopqrstuvwx1234'
aws_key = AKIAABCDEFGHIJKLMNOP
db_password: hunter2-is-long
url = \"https://deploy:s3cr3tpass@git.example.com/repo.git\"
-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAA
-----END OPENSSH PRIVATE KEY-----
def helper(x):
    return x * 2
";
        let out = redact(text);
        for secret in [
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "sk-proj-abcdefghijklmnopqrstuvwx1234",
            "AKIAABCDEFGHIJKLMNOP",
            "hunter2-is-long",
            "s3cr3tpass",
            "b3BlbnNzaC1rZXktdjEAAAAA",
        ] {
            assert!(!out.contains(secret), "{secret} kept in:\n{out}");
        }
        assert!(out.contains("def helper(x):\n    return x * 2"), "{out}");
        assert!(
            out.contains("https://deploy:[REDACTED]@git.example.com/repo.git"),
            "{out}"
        );
        // Cut off before its end, a key block is redacted to the end of the text.
        let cut = redact("key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc");
        assert!(!cut.contains("MIIEowIBAAKCAQEA"), "{cut}");
        let more = redact(
            "curl -H 'Authorization: Bearer abcdefghijklmnop1234' https://ghp0123456789abcdefghij0123@host/x hf_abcdefghijklmnopqrstuvwx",
        );
        for secret in [
            "abcdefghijklmnop1234",
            "ghp0123456789abcdefghij0123",
            "hf_abcdefghijklmnopqrstuvwx",
        ] {
            assert!(!more.contains(secret), "{secret} kept in {more}");
        }
        let known = redact_known("the key is Zq9-weird.shape!", &["Zq9-weird.shape!".into()]);
        assert_eq!(known, "the key is [REDACTED]");
        assert!(matches!(
            redact("def f(): pass"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

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
