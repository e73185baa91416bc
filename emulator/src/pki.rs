//! The emulator's certificate authority and server certificate. Created on first start (and
//! kept in the state directory when there is one), so clients trust the CA PEM once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, KeyPair>,
    /// Names every certificate covers besides the requested one.
    base_names: Vec<String>,
    hsm_domain: String,
}

impl Pki {
    /// Loads the CA from `dir` (or makes one, saving it there). Server certificates are issued
    /// on demand, one per requested host name (`demo-hsm.localhost`): wildcards over a
    /// single-label domain like `*.localhost` are refused by many TLS clients.
    pub fn load_or_create(
        dir: Option<&Path>,
        hsm_domain: &str,
        names: &[String],
    ) -> Result<Pki, String> {
        let err = |e: rcgen::Error| format!("certificate generation failed: {e}");
        let existing = dir.and_then(|d| {
            let cert = std::fs::read_to_string(d.join(CA_CERT)).ok()?;
            let key = std::fs::read_to_string(d.join(CA_KEY)).ok()?;
            Some((cert, key))
        });
        let (ca_pem, issuer) = match existing {
            // Issuing needs the CA's name and key, not its certificate: certificates issued
            // by the same name and key chain to the saved CA certificate.
            Some((cert, key)) => (
                cert,
                rcgen::Issuer::new(
                    ca_params().map_err(err)?,
                    KeyPair::from_pem(&key).map_err(err)?,
                ),
            ),
            None => {
                let key = KeyPair::generate().map_err(err)?;
                let key_pem = key.serialize_pem();
                let ca =
                    CertifiedIssuer::self_signed(ca_params().map_err(err)?, key).map_err(err)?;
                let pem = ca.pem();
                if let Some(d) = dir {
                    std::fs::create_dir_all(d)
                        .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
                    write_private(&d.join(CA_KEY), &key_pem)?;
                    std::fs::write(d.join(CA_CERT), &pem)
                        .map_err(|e| format!("cannot write the CA: {e}"))?;
                }
                (
                    pem,
                    rcgen::Issuer::new(
                        ca_params().map_err(err)?,
                        KeyPair::from_pem(&key_pem).map_err(err)?,
                    ),
                )
            }
        };
        let mut base_names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        base_names.extend(names.iter().cloned());
        Ok(Pki {
            ca_pem,
            issuer,
            base_names,
            hsm_domain: hsm_domain.to_ascii_lowercase(),
        })
    }

    /// A certificate (and key) for `name` plus the base names.
    fn issue(&self, name: Option<&str>) -> Result<Arc<CertifiedKey>, String> {
        let err = |e: rcgen::Error| format!("certificate generation failed: {e}");
        let mut sans = self.base_names.clone();
        if let Some(n) = name
            && !sans.iter().any(|s| s == n)
        {
            sans.insert(0, n.to_string());
        }
        let mut params = CertificateParams::new(sans).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.unwrap_or("localhost"));
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| e.to_string())?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone()],
            signing,
        )))
    }

    /// Whether a certificate may be issued for a requested server name.
    fn serves(&self, name: &str) -> bool {
        name == "localhost"
            || name == self.hsm_domain
            || name
                .strip_suffix(&format!(".{}", self.hsm_domain))
                .is_some_and(|l| !l.is_empty() && !l.contains('.'))
            // Vaults: `{name}.vault.{hsm_domain}`.
            || name
                .strip_suffix(&format!(".vault.{}", self.hsm_domain))
                .is_some_and(|l| !l.is_empty() && !l.contains('.'))
            || self.base_names.iter().any(|n| n == name)
    }

    pub fn tls_config(self) -> Result<rustls::ServerConfig, String> {
        let default = self.issue(None)?;
        let resolver = CertResolver {
            pki: self,
            default,
            cache: Mutex::new(HashMap::new()),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Picks (issuing on first use) the certificate for the SNI name of each handshake.
struct CertResolver {
    pki: Pki,
    default: Arc<CertifiedKey>,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertResolver")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        if !self.pki.serves(&name) {
            return Some(self.default.clone());
        }
        let mut cache = self.cache.lock().unwrap();
        if let Some(k) = cache.get(&name) {
            return Some(k.clone());
        }
        match self.pki.issue(Some(&name)) {
            Ok(k) => {
                cache.insert(name, k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::error!("cannot issue a certificate for {name}: {e}");
                Some(self.default.clone())
            }
        }
    }
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Keyward Azure Managed HSM Emulator CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Writes a secret file readable by the owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
