//! Certificates for tests and benchmarks: a CA of its own, as a cluster should have, and
//! certificates it signs for 127.0.0.1.

use std::path::Path;

use meshgate_cluster::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority of its own, as a cluster should have.
pub struct Authority {
    name: &'static str,
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Authority {
    pub fn new(name: &'static str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Authority {
            name,
            params,
            key,
            pem,
        }
    }

    /// A certificate for 127.0.0.1 that serves and dials, written next to this CA.
    pub fn issue(&self, dir: &Path, who: &str) -> TlsFiles {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, who);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        let files = TlsFiles {
            ca: dir.join(format!("{}-ca.pem", self.name)),
            cert: dir.join(format!("{who}.pem")),
            key: dir.join(format!("{who}-key.pem")),
        };
        std::fs::write(&files.ca, &self.pem).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}
