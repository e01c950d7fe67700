//! Loading the private key from its text (as it arrives from `env("SSH_KEY")`,
//! `file(...)` or a GitLab file variable): OpenSSH and PEM formats, ed25519,
//! RSA and ECDSA, with clear messages for encrypted keys, wrong passphrases,
//! public keys and paths given where the key's text was expected.

use russh::keys::{Algorithm, HashAlg, PrivateKey};

use crate::error::SshError;

/// Parses a private key from its text, decrypting it with `passphrase` if
/// it is encrypted.
///
/// Tolerates surrounding whitespace, CRLF line endings and keys whose
/// newlines were flattened to literal `\n` (a common CI variable mishap).
/// Errors never contain key material.
pub fn load_private_key(text: &str, passphrase: Option<&str>) -> Result<PrivateKey, SshError> {
    let passphrase = passphrase.filter(|p| !p.is_empty());
    let text = normalize(text);
    let text = text.as_str();

    if text.is_empty() {
        return Err(SshError::key(
            "the private key is empty: set `private_key` to the key's text, e.g. env(\"SSH_KEY\") or file(\"~/.ssh/id_ed25519\")",
        ));
    }
    if !text.contains("-----BEGIN ") && !text.starts_with("PuTTY-User-Key-File-") {
        return Err(SshError::key(describe_non_key(text)));
    }
    if text.contains("-----BEGIN SSH2 ") || text.contains(" PUBLIC KEY-----") {
        return Err(SshError::key(
            "`private_key` holds a public key: it needs the private half (the file without `.pub`)",
        ));
    }
    let pem_encrypted = text.contains("Proc-Type: 4,ENCRYPTED")
        || text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----");
    if pem_encrypted && passphrase.is_none() {
        return Err(encrypted_without_passphrase());
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") && !text.contains("DEK-Info: AES-128-CBC,") {
        return Err(SshError::key(
            "the private key is a PEM key encrypted with a cipher other than AES-128-CBC, which is not supported: \
             convert it to the OpenSSH format with `ssh-keygen -p -f KEYFILE`",
        ));
    }
    if text.contains("-----BEGIN DSA PRIVATE KEY-----") {
        return Err(unsupported("DSA"));
    }

    let key = match russh::keys::decode_secret_key(text, passphrase) {
        Ok(key) => key,
        Err(russh::keys::Error::KeyIsEncrypted) => return Err(encrypted_without_passphrase()),
        Err(e) => {
            let encrypted = pem_encrypted || openssh_encrypted(text);
            return Err(if encrypted && passphrase.is_some() {
                SshError::key(format!(
                    "could not decrypt the private key: is `passphrase` right? ({e})"
                ))
            } else {
                SshError::key(format!("could not read the private key: {e}"))
            });
        }
    };
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Rsa { .. } | Algorithm::Ecdsa { .. } => Ok(key),
        other => Err(unsupported(other.as_str())),
    }
}

/// The `SHA256:...` fingerprint of a private key's public half, for messages.
pub fn public_fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

fn normalize(text: &str) -> String {
    let trimmed = text.trim();
    let unescaped = if !trimmed.contains('\n') && trimmed.contains("\\n") {
        trimmed.replace("\\r\\n", "\n").replace("\\n", "\n")
    } else {
        trimmed.to_owned()
    };
    let mut out: String = unescaped
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    if out.trim().is_empty() {
        String::new()
    } else {
        out
    }
}

/// Whether an OpenSSH-format key is encrypted (cipher name is not `none`).
fn openssh_encrypted(text: &str) -> bool {
    text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
        && PrivateKey::from_openssh(text).is_ok_and(|k| k.is_encrypted())
}

fn describe_non_key(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default().trim();
    let single_line = text.trim().lines().count() == 1;
    if first.starts_with("ssh-") || first.starts_with("ecdsa-") || first.starts_with("sk-") {
        "`private_key` holds a public key: it needs the private half (the file without `.pub`)"
            .to_owned()
    } else if single_line && !first.contains(' ') && (first.contains('/') || first.starts_with('~'))
    {
        "`private_key` must be the key's text, not a path: use private_key = file(\"PATH\")"
            .to_owned()
    } else {
        "`private_key` is not a private key: expected text starting with \
         -----BEGIN OPENSSH PRIVATE KEY----- or a PEM header"
            .to_owned()
    }
}

fn encrypted_without_passphrase() -> SshError {
    SshError::key("the private key is encrypted: set `passphrase`")
}

fn unsupported(kind: &str) -> SshError {
    SshError::key(format!(
        "unsupported private key type {kind}: use an ed25519, RSA or ECDSA key"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_path_and_public_keys() {
        let err = |t: &str| load_private_key(t, None).unwrap_err().to_string();
        assert!(err("  \n").contains("empty"));
        assert!(err("/home/me/.ssh/id_ed25519").contains("not a path"));
        assert!(err("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ me").contains("public key"));
        assert!(
            err("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .contains("public key")
        );
        assert!(
            err("-----BEGIN OPENSSH PRIVATE KEY-----\n!!!!\n-----END OPENSSH PRIVATE KEY-----")
                .contains("could not read")
        );
    }

    #[test]
    fn pem_encrypted_without_passphrase() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let e = load_private_key(pem, None).unwrap_err().to_string();
        assert_eq!(e, "the private key is encrypted: set `passphrase`");
        let e = load_private_key(pem, Some("")).unwrap_err().to_string();
        assert!(e.contains("passphrase"), "{e}");
    }

    #[test]
    fn normalizes_escaped_newlines_and_crlf() {
        assert_eq!(normalize("a\\nb\\n"), "a\nb\n");
        assert_eq!(normalize("a\r\nb\r\n"), "a\nb\n");
        assert_eq!(normalize("  \n "), "");
    }
}
