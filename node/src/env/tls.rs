//! TLS for both ports, and `dynakv certs`, which makes the files it reads.
//!
//! A certificates directory holds `ca.crt` (the cluster CA), `node.crt` and `node.key`.
//! A node certificate names `node.dynakv` (every node's, checked as the TLS server name)
//! and `<id>.node.dynakv` (this node's id, checked against the id the peer claims in the
//! cluster handshake, so one node's certificate cannot speak for another), plus any
//! hosts given for the client port. It is good for both server and client
//! authentication; a client certificate (`client.<name>.crt`) only for the latter, so it
//! cannot pass for a node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name every node certificate carries and every node checks as the server name.
pub const NODE_NAME: &str = "node.dynakv";

/// The name that ties a node certificate to node `id`.
pub fn id_name(id: &str) -> String {
    format!("{id}.{NODE_NAME}")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates and key a node serves with.
pub struct Material {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The certificates in a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A trust store of the CA certificates `ca`.
fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(|e| format!("ca.crt: {e}"))?;
    }
    Ok(Arc::new(roots))
}

impl Material {
    /// Reads `ca.crt`, `node.crt` and `node.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Material, String> {
        Ok(Material {
            ca: read_certs(&dir.join("ca.crt"))?,
            chain: read_certs(&dir.join("node.crt"))?,
            key: read_key(&dir.join("node.key"))?,
        })
    }
}

/// TLS on the cluster port: both sides show a node certificate of the cluster CA.
pub struct ClusterTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    /// Checks a certificate against the CA for a given name (the peer's id).
    names: Arc<WebPkiServerVerifier>,
}

impl ClusterTls {
    pub fn new(m: &Material) -> Result<ClusterTls, String> {
        let trusted = roots(&m.ca)?;
        let names = WebPkiServerVerifier::builder_with_provider(trusted.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(trusted.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(m.chain.clone(), m.key.clone_key())
            .map_err(|e| format!("node.crt/node.key: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(trusted)
            .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
            .map_err(|e| format!("node.crt/node.key: {e}"))?;
        Ok(ClusterTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            names,
        })
    }

    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(NODE_NAME).expect("a valid DNS name");
        self.connector.connect(name, tcp).await
    }

    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.acceptor.accept(tcp).await
    }

    /// Whether the peer's certificate (already checked against the CA by TLS) is the one
    /// of node `id`.
    pub fn check_id(&self, certs: Option<&[CertificateDer<'static>]>, id: &str) -> Result<(), String> {
        let Some((leaf, rest)) = certs.and_then(|c| c.split_first()) else {
            return Err("the peer showed no certificate".into());
        };
        let name = ServerName::try_from(id_name(id))
            .map_err(|_| format!("node id {id:?} cannot be named in a certificate"))?;
        self.names
            .verify_server_cert(leaf, rest, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| format!("the peer claims node id {id:?} but its certificate is not for it: {e}"))
    }
}

/// TLS on the client port with the node's certificate (clients check it against the CA);
/// with `require_client_cert`, clients must show a certificate of the cluster CA too
/// (`dynakv certs client`).
pub fn client_port_acceptor(m: &Material, require_client_cert: bool) -> Result<TlsAcceptor, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if require_client_cert {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&m.ca)?, provider())
            .build()
            .map_err(|e| e.to_string())?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut server = builder
        .with_single_cert(m.chain.clone(), m.key.clone_key())
        .map_err(|e| format!("node.crt/node.key: {e}"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// A client configuration trusting `ca`, showing the client certificate `cert` (with its
/// key, `client.NAME.crt` and `.key` from `dynakv certs client`) when given.
pub fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(&read_certs(ca)?)?);
    match cert {
        None => Ok(builder.with_no_client_auth()),
        Some((crt, key)) => builder
            .with_client_auth_cert(read_certs(crt)?, read_key(key)?)
            .map_err(|e| e.to_string()),
    }
}

/// `dynakv certs`: makes a cluster CA, node and client certificates, and secrets.
#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Creates the cluster CA (ca.crt, ca.key) in DIR.
    Ca {
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it signed stops being trusted).
        #[arg(long)]
        overwrite: bool,
    },
    /// Creates a node certificate signed by the CA in DIR, into OUT (default DIR/ID):
    /// ca.crt, node.crt, node.key.
    Node {
        #[arg(long)]
        dir: PathBuf,
        /// The node's id (its certificate is good for this id only).
        #[arg(long)]
        id: String,
        /// Host names or IP addresses clients use for this node's client port (repeat).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Creates a client certificate client.NAME.crt/.key in DIR.
    Client {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Writes a new random cluster secret (64 hex characters) to FILE, readable by its owner only.
    Secret {
        #[arg(long)]
        out: PathBuf,
    },
    /// Everything a cluster needs, made where missing (kept where present): the CA, a
    /// secret (DIR/cluster.secret) and a certificate per node id (DIR/ID/), for that id,
    /// localhost and 127.0.0.1.
    Cluster {
        #[arg(long)]
        dir: PathBuf,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<String>,
    },
}

/// The CA's parameters; the same each time, so a CA read back from disk signs as the
/// one that was created.
fn ca_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "dynakv cluster CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(this_year() - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(this_year() + 10, 1, 1);
    p
}

fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

/// Writes `text` to `path`, readable by its owner only when `private`.
fn write_file(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

fn load_ca(dir: &Path) -> anyhow::Result<(String, rcgen::KeyPair)> {
    let cert = std::fs::read_to_string(dir.join("ca.crt")).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (create the CA first: dynakv certs ca --dir DIR)",
            dir.join("ca.crt").display()
        )
    })?;
    let key = std::fs::read_to_string(dir.join("ca.key"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("ca.key").display()))?;
    Ok((cert, rcgen::KeyPair::from_pem(&key)?))
}

fn leaf_params(
    names: Vec<String>,
    cn: &str,
    eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> anyhow::Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::new(names)?;
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = eku;
    p.not_before = rcgen::date_time_ymd(this_year() - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(this_year() + 5, 1, 1);
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

pub fn run_certs(cmd: CertsCommand) -> anyhow::Result<()> {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    match cmd {
        CertsCommand::Ca { dir, overwrite } => {
            std::fs::create_dir_all(&dir)?;
            if dir.join("ca.key").exists() && !overwrite {
                anyhow::bail!(
                    "{} exists; pass --overwrite to replace the CA (certificates it signed stop being trusted)",
                    dir.join("ca.key").display()
                );
            }
            let key = rcgen::KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_file(&dir.join("ca.crt"), &cert.pem(), false)?;
            write_file(&dir.join("ca.key"), &key.serialize_pem(), true)?;
        }
        CertsCommand::Node { dir, id, hosts, out } => {
            let node_id = dynakv_ring::NodeId::new(&id)?;
            let name = id_name(node_id.as_str());
            if ServerName::try_from(name.as_str()).is_err() || id.split('.').any(|l| l.len() > 63 || l.is_empty()) {
                anyhow::bail!(
                    "node id {id:?} cannot be named in a certificate: use DNS labels (letters, digits, -), at most 63 characters between dots"
                );
            }
            let (ca_pem, ca_key) = load_ca(&dir)?;
            let mut names = vec![NODE_NAME.to_string(), name];
            names.extend(hosts);
            let key = rcgen::KeyPair::generate()?;
            let cert = leaf_params(names, &id, vec![ServerAuth, ClientAuth])?
                .signed_by(&key, &rcgen::Issuer::new(ca_params(), &ca_key))?;
            let out = out.unwrap_or_else(|| dir.join(&id));
            std::fs::create_dir_all(&out)?;
            write_file(&out.join("ca.crt"), &ca_pem, false)?;
            write_file(&out.join("node.crt"), &cert.pem(), false)?;
            write_file(&out.join("node.key"), &key.serialize_pem(), true)?;
        }
        CertsCommand::Client { dir, name } => {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                anyhow::bail!("client name {name:?}: use letters, digits, - _ .");
            }
            let (_, ca_key) = load_ca(&dir)?;
            let key = rcgen::KeyPair::generate()?;
            let cert = leaf_params(vec![], &name, vec![ClientAuth])?
                .signed_by(&key, &rcgen::Issuer::new(ca_params(), &ca_key))?;
            write_file(&dir.join(format!("client.{name}.crt")), &cert.pem(), false)?;
            write_file(&dir.join(format!("client.{name}.key")), &key.serialize_pem(), true)?;
        }
        CertsCommand::Cluster { dir, ids } => {
            if !dir.join("ca.key").exists() {
                run_certs(CertsCommand::Ca {
                    dir: dir.clone(),
                    overwrite: false,
                })?;
            }
            if !dir.join("cluster.secret").exists() {
                run_certs(CertsCommand::Secret {
                    out: dir.join("cluster.secret"),
                })?;
            }
            for id in ids {
                if !dir.join(&id).join("node.crt").exists() {
                    run_certs(CertsCommand::Node {
                        dir: dir.clone(),
                        hosts: vec![id.clone(), "localhost".into(), "127.0.0.1".into()],
                        id,
                        out: None,
                    })?;
                }
            }
        }
        CertsCommand::Secret { out } => {
            let bytes: [u8; 32] = rand::random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_file(&out, &format!("{hex}\n"), true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs_for(dir: &Path, ids: &[&str]) {
        run_certs(CertsCommand::Ca {
            dir: dir.to_path_buf(),
            overwrite: false,
        })
        .unwrap();
        for id in ids {
            run_certs(CertsCommand::Node {
                dir: dir.to_path_buf(),
                id: id.to_string(),
                hosts: vec!["localhost".into(), "127.0.0.1".into()],
                out: None,
            })
            .unwrap();
        }
    }

    #[test]
    fn a_node_certificate_is_good_for_its_own_id_only() {
        let dir = tempfile::tempdir().unwrap();
        certs_for(dir.path(), &["n1", "n2"]);
        let n1 = Material::load(&dir.path().join("n1")).unwrap();
        let n2 = Material::load(&dir.path().join("n2")).unwrap();
        let tls = ClusterTls::new(&n1).unwrap();
        tls.check_id(Some(&n2.chain), "n2").unwrap();
        let e = tls.check_id(Some(&n2.chain), "n1").unwrap_err();
        assert!(e.contains("not for it"), "{e}");
        assert!(tls.check_id(None, "n2").is_err());
        // A certificate from another CA is refused whatever it names.
        let other = tempfile::tempdir().unwrap();
        certs_for(other.path(), &["n2"]);
        let foreign = Material::load(&other.path().join("n2")).unwrap();
        assert!(tls.check_id(Some(&foreign.chain), "n2").is_err());
        // The CA refuses to be replaced by accident.
        assert!(
            run_certs(CertsCommand::Ca {
                dir: dir.path().to_path_buf(),
                overwrite: false
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn mutual_tls_between_two_nodes_and_a_client_certificate_cannot_pass_for_a_node() {
        let dir = tempfile::tempdir().unwrap();
        certs_for(dir.path(), &["n1", "n2"]);
        let n1 = ClusterTls::new(&Material::load(&dir.path().join("n1")).unwrap()).unwrap();
        let n2 = ClusterTls::new(&Material::load(&dir.path().join("n2")).unwrap()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let s = n2.accept(tcp).await.unwrap();
            let certs = s.get_ref().1.peer_certificates().map(|c| c.to_vec());
            n2.check_id(certs.as_deref(), "n1")
        });
        let c = n1.connect(TcpStream::connect(addr).await.unwrap()).await.unwrap();
        let certs = c.get_ref().1.peer_certificates().map(|c| c.to_vec());
        n1.check_id(certs.as_deref(), "n2").unwrap();
        server.await.unwrap().unwrap();

        run_certs(CertsCommand::Client {
            dir: dir.path().to_path_buf(),
            name: "app".into(),
        })
        .unwrap();
        let chain = CertificateDer::pem_file_iter(dir.path().join("client.app.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let n1m = Material::load(&dir.path().join("n1")).unwrap();
        let tls = ClusterTls::new(&n1m).unwrap();
        assert!(tls.check_id(Some(&chain), "app").is_err());
    }
}
