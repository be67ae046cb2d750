//! TLS from Spring Boot's `spring.rabbitmq.ssl.*`: the trusted CAs and the client identity, in
//! the forms lapin (rustls) takes them.
//!
//! Trust and key stores are files (a `file:` prefix is accepted, as Spring Boot writes
//! resources): PEM, or PKCS12. Spring Boot's default `trust-store-type` is JKS, which cannot be
//! read here; a PEM or PKCS12 file given with the default type is recognised by its content, a
//! real JKS file is an error that says how to convert it.

use base64::Engine;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};

use crate::config::RabbitSslProperties;

const JKS_MAGIC: [u8; 4] = [0xFE, 0xED, 0xFE, 0xED];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pem,
    Pkcs12,
}

/// The TLS configuration of `spring.rabbitmq.ssl.*` (used for `amqps` addresses). Errors name
/// the key and say how to fix it.
pub(crate) fn tls_config(ssl: &RabbitSslProperties) -> Result<OwnedTLSConfig, String> {
    if !ssl.validate_server_certificate {
        return Err("spring.rabbitmq.ssl.validate-server-certificate=false is not supported: connections are always verified; trust the broker's CA with spring.rabbitmq.ssl.trust-store".to_owned());
    }
    if !ssl.verify_hostname {
        return Err("spring.rabbitmq.ssl.verify-hostname=false is not supported: the broker's certificate must name the host connected to (a DNS name or IP address in its subjectAltName)".to_owned());
    }
    let cert_chain = match &ssl.trust_store {
        None => None,
        Some(path) => {
            let key = "spring.rabbitmq.ssl.trust-store";
            let bytes = read(key, path)?;
            let password = ssl
                .trust_store_password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            Some(match format_of(key, &bytes, &ssl.trust_store_type)? {
                Format::Pem => pem_text(key, bytes)?,
                Format::Pkcs12 => pkcs12_certificates(key, &bytes, &password)?,
            })
        }
    };
    let identity = match &ssl.key_store {
        None => None,
        Some(path) => {
            let key = "spring.rabbitmq.ssl.key-store";
            let bytes = read(key, path)?;
            Some(match format_of(key, &bytes, &ssl.key_store_type)? {
                Format::Pem => {
                    let text = pem_text(key, bytes)?;
                    if !text.contains("PRIVATE KEY-----") {
                        return Err(format!(
                            "{key}: `{path}` holds no private key; a PEM key store holds the certificate chain and the (PKCS8, RSA or EC) private key"
                        ));
                    }
                    OwnedIdentity::PKCS8 {
                        pem: text.clone().into_bytes(),
                        key: text.into_bytes(),
                    }
                }
                Format::Pkcs12 => {
                    let password = ssl
                        .key_store_password
                        .as_ref()
                        .map(|p| p.expose().to_owned())
                        .unwrap_or_default();
                    p12_keystore::KeyStore::from_pkcs12(&bytes, &password)
                        .map_err(|e| format!("{key}: `{path}` is not a readable PKCS12 file (check spring.rabbitmq.ssl.key-store-password): {e}"))?
                        .private_key_chain()
                        .ok_or_else(|| format!("{key}: `{path}` holds no private key"))?;
                    OwnedIdentity::PKCS12 {
                        der: bytes,
                        password,
                    }
                }
            })
        }
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, String> {
    if path.starts_with("classpath:") {
        return Err(format!(
            "{key}: `{path}`: there is no classpath here; give a file path"
        ));
    }
    let file = path.strip_prefix("file:").unwrap_or(path);
    std::fs::read(file).map_err(|e| format!("{key}: cannot read `{file}`: {e}"))
}

fn format_of(key: &str, bytes: &[u8], declared: &str) -> Result<Format, String> {
    let pem = bytes.trim_ascii_start().starts_with(b"-----BEGIN");
    let jks = bytes.starts_with(&JKS_MAGIC);
    match declared.trim().to_ascii_uppercase().as_str() {
        "PEM" if pem => Ok(Format::Pem),
        "PEM" => Err(format!("{key}: the file is not PEM (`-----BEGIN ...`)")),
        "PKCS12" | "P12" | "PFX" if pem => Ok(Format::Pem),
        "PKCS12" | "P12" | "PFX" => Ok(Format::Pkcs12),
        "JKS" | "" if jks => Err(format!(
            "{key}: JKS stores cannot be read here; convert it with `keytool -importkeystore -srckeystore <file> -destkeystore <file>.p12 -deststoretype PKCS12` (or export the CA as PEM) and set the type to PKCS12 or PEM"
        )),
        "JKS" | "" if pem => Ok(Format::Pem),
        "JKS" | "" => Ok(Format::Pkcs12),
        other => Err(format!(
            "{key}: store type `{other}` is not supported; use PEM or PKCS12"
        )),
    }
}

fn pem_text(key: &str, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("{key}: the PEM file is not text"))
}

/// Every certificate of a PKCS12 trust store, as PEM.
fn pkcs12_certificates(key: &str, der: &[u8], password: &str) -> Result<String, String> {
    let store = p12_keystore::KeyStore::from_pkcs12(der, password).map_err(|e| {
        format!("{key}: not a readable PKCS12 file (check spring.rabbitmq.ssl.trust-store-password): {e}")
    })?;
    let mut pem = String::new();
    for (_, entry) in store.entries() {
        let certs: Vec<&[u8]> = match entry {
            p12_keystore::KeyStoreEntry::Certificate(c) => vec![c.as_der()],
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                chain.chain().iter().map(|c| c.as_der()).collect()
            }
            _ => Vec::new(),
        };
        for der in certs {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
    }
    if pem.is_empty() {
        return Err(format!(
            "{key}: the PKCS12 file holds no trusted certificate (Java's trusted-certificate entries, as keytool writes them); or give the CA as a PEM file"
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_declared_type_and_content() {
        let k = "k";
        assert_eq!(format_of(k, b"-----BEGIN CERT", "JKS"), Ok(Format::Pem));
        assert_eq!(format_of(k, b"\x30\x82", "JKS"), Ok(Format::Pkcs12));
        assert_eq!(format_of(k, b"\x30\x82", "pkcs12"), Ok(Format::Pkcs12));
        assert!(
            format_of(k, &JKS_MAGIC, "JKS")
                .unwrap_err()
                .contains("keytool")
        );
        assert!(format_of(k, b"\x30", "PEM").is_err());
        assert!(format_of(k, b"x", "BKS").is_err());
    }

    #[test]
    fn unverified_connections_are_refused_naming_the_key() {
        let ssl = RabbitSslProperties {
            verify_hostname: false,
            ..RabbitSslProperties::default()
        };
        assert!(
            tls_config(&ssl)
                .unwrap_err()
                .contains("spring.rabbitmq.ssl.verify-hostname=false")
        );
        let ssl = RabbitSslProperties {
            trust_store: Some("/nonexistent/ca.pem".into()),
            ..RabbitSslProperties::default()
        };
        assert!(
            tls_config(&ssl)
                .unwrap_err()
                .contains("spring.rabbitmq.ssl.trust-store: cannot read `/nonexistent/ca.pem`")
        );
        assert_eq!(
            tls_config(&RabbitSslProperties::default()),
            Ok(OwnedTLSConfig::default())
        );
    }
}
