//! Key material as people keep it in files (raw bytes, DER, base64, hex, PEM), turned into
//! the `value` and `value_format` of an import request. Shared by the CLI (`keys import
//! --file`) and the console's upload, so a file is read the same way by both. Only the
//! encoding is handled here: the key service decodes and checks the material itself.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

/// How a file holds key material.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialFormat {
    /// PEM, then a file of hex digits, then base64, else raw bytes.
    Auto,
    Raw,
    Der,
    Base64,
    Hex,
    Pem,
}

impl MaterialFormat {
    pub fn parse(s: &str) -> Option<MaterialFormat> {
        <MaterialFormat as clap::ValueEnum>::from_str(s, true).ok()
    }
}

/// Why a file cannot be read as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("not text, as {0} must be")]
    NotText(&'static str),
    #[error("not a PEM private key")]
    NotPem,
    #[error("the file is empty")]
    Empty,
}

/// `value` and `value_format` of an import: hex and base64 go as they are (whitespace
/// removed), PEM as its DER, raw bytes and DER in base64.
pub fn encode(bytes: &[u8], format: MaterialFormat) -> Result<(String, &'static str), FileError> {
    if bytes.is_empty() {
        return Err(FileError::Empty);
    }
    let text = |what| -> Result<String, FileError> {
        let t = std::str::from_utf8(bytes).map_err(|_| FileError::NotText(what))?;
        Ok(t.split_whitespace().collect())
    };
    let pem = || {
        PrivateKeyDer::from_pem_slice(bytes)
            .map(|der| (STANDARD.encode(der.secret_der()), "base64"))
            .map_err(|_| FileError::NotPem)
    };
    match format {
        MaterialFormat::Raw | MaterialFormat::Der => Ok((STANDARD.encode(bytes), "base64")),
        MaterialFormat::Pem => pem(),
        MaterialFormat::Hex => Ok((text("hex")?, "hex")),
        MaterialFormat::Base64 => Ok((text("base64")?, "base64")),
        MaterialFormat::Auto => {
            if bytes.starts_with(b"-----BEGIN") {
                return pem();
            }
            let Ok(t) = text("auto") else {
                return Ok((STANDARD.encode(bytes), "base64"));
            };
            if !t.is_empty() && t.len() % 2 == 0 && t.bytes().all(|c| c.is_ascii_hexdigit()) {
                Ok((t, "hex"))
            } else if !t.is_empty() && STANDARD.decode(&t).is_ok() {
                Ok((t, "base64"))
            } else {
                Ok((STANDARD.encode(bytes), "base64"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_becomes_a_value_the_api_takes() {
        let key = [0x11_u8; 32];
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = STANDARD.encode(key);
        assert_eq!(
            encode(&key, MaterialFormat::Raw).unwrap(),
            (b64.clone(), "base64")
        );
        assert_eq!(
            encode(hex.as_bytes(), MaterialFormat::Hex).unwrap(),
            (hex.clone(), "hex")
        );
        assert_eq!(
            encode(format!("{b64}\n").as_bytes(), MaterialFormat::Base64).unwrap(),
            (b64.clone(), "base64")
        );
        assert_eq!(
            encode(hex.as_bytes(), MaterialFormat::Auto).unwrap(),
            (hex, "hex")
        );
        assert_eq!(encode(&key, MaterialFormat::Auto).unwrap(), (b64, "base64"));
        assert_eq!(
            encode(
                b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                MaterialFormat::Auto
            ),
            Err(FileError::NotPem)
        );
        assert_eq!(encode(b"", MaterialFormat::Raw), Err(FileError::Empty));
        assert_eq!(MaterialFormat::parse("PEM"), Some(MaterialFormat::Pem));
    }
}
