//! Certificates of one cluster: serving CA and cert, client CA and the `admin` client cert,
//! and the service-account signing key. ECDSA P-256 everywhere (like envtest's TinyCA).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

/// PEM material of one cluster. Private keys never appear in logs or `Debug` output.
pub(crate) struct ClusterCerts {
    pub serving_ca: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub client_ca: String,
    pub admin_cert: String,
    pub admin_key: String,
    pub sa_key: String,
    pub sa_public: String,
}

impl std::fmt::Debug for ClusterCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCerts { .. }")
    }
}

/// Files the apiserver (and kube-controller-manager's service-account controllers) read.
#[derive(Debug, Clone)]
pub(crate) struct CertPaths {
    /// CA of the serving certificate: what Pods are told to trust (`kube-root-ca.crt`).
    pub serving_ca: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub client_ca: PathBuf,
    pub sa_key: PathBuf,
    pub sa_public: PathBuf,
}

impl CertPaths {
    pub fn in_dir(dir: &Path) -> Self {
        CertPaths {
            serving_ca: dir.join("serving-ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            client_ca: dir.join("client-ca.crt"),
            sa_key: dir.join("sa.key"),
            sa_public: dir.join("sa.pub"),
        }
    }
}

fn ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "kurator-testenv");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    organizations: &[&str],
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for o in organizations {
        dn.push(DnType::OrganizationName, *o);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl ClusterCerts {
    /// Fresh CAs and certs for the cluster `cluster`.
    pub fn generate(cluster: &str) -> Result<Self> {
        let serving_ca = ca(&format!("{cluster}-serving-ca"))?;
        let (serving_cert, serving_key) = leaf(
            &serving_ca,
            "localhost",
            &[],
            vec![
                SanType::DnsName("localhost".try_into()?),
                SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let client_ca = ca(&format!("{cluster}-client-ca"))?;
        let (admin_cert, admin_key) = leaf(
            &client_ca,
            "admin",
            &["system:masters"],
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa = KeyPair::generate()?;
        Ok(ClusterCerts {
            serving_ca: serving_ca.pem(),
            serving_cert,
            serving_key,
            client_ca: client_ca.pem(),
            admin_cert,
            admin_key,
            sa_key: sa.serialize_pem(),
            sa_public: sa.public_key_pem(),
        })
    }

    /// Writes the files the apiserver needs into `dir` (keys with mode 0600).
    pub fn write(&self, dir: &Path) -> Result<CertPaths> {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let paths = CertPaths::in_dir(dir);
        write_file(&paths.serving_ca, &self.serving_ca, 0o644)?;
        write_file(&paths.serving_cert, &self.serving_cert, 0o644)?;
        write_file(&paths.serving_key, &self.serving_key, 0o600)?;
        write_file(&paths.client_ca, &self.client_ca, 0o644)?;
        write_file(&paths.sa_key, &self.sa_key, 0o600)?;
        write_file(&paths.sa_public, &self.sa_public, 0o644)?;
        Ok(paths)
    }
}

/// Writes `content` to `path` with `mode` (new files) and truncation.
pub(crate) fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("writing", path, e))?;
    f.write_all(content.as_bytes())
        .map_err(|e| Error::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_material() {
        let c = ClusterCerts::generate("host").expect("certs");
        assert!(c.serving_ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.admin_key.contains("PRIVATE KEY"));
        assert!(c.sa_public.contains("PUBLIC KEY"));
        assert_eq!(format!("{c:?}"), "ClusterCerts { .. }");
    }
}
