//! TLS for a node's three ports and for the connections it makes (rustls with the ring provider; no OpenSSL).
//!
//! Two sets of files, named as etcd names them: the client side (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth`) secures the client gRPC port and the HTTP port; the peer side (`--peer-cert-file`,
//! `--peer-key-file`, `--peer-trusted-ca-file`) secures the peer port, always with mutual authentication: a peer
//! connection succeeds only if both ends hold a certificate signed by the peer CA. A node also uses its files as a
//! client: the peer files to reach other peers, the client files to forward requests to the leader's client port.
//!
//! Invariants:
//! - With TLS configured, nothing on that port is ever served in clear text: the acceptor completes a TLS
//!   handshake before a single byte reaches gRPC or HTTP, and a connection that fails it is closed.
//! - Certificates are reloaded when their files change (polled) or on SIGHUP, without a restart. A reload that
//!   fails (a half-written file, a key that does not match) keeps the previous, working configuration and logs why.
//!   New connections use the new files; open connections keep the session they negotiated.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use parking_lot::RwLock;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::error::{Error, Result};

/// How long a client may take to finish its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often certificate files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// One certificate, its key, and the CA that authenticates the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Verifies the other side's certificate (clients on a server port; servers when this node connects out).
    pub trusted_ca: Option<PathBuf>,
    /// On a server port: refuse clients without a certificate signed by `trusted_ca`.
    pub require_client_cert: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config(format!("the {what} {} is not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("the {what} {} holds no certificate", path.display())));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path, "key file")?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| Error::Config(format!("the key file {} holds no PEM private key: {e}", path.display())))
}

fn roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs(path, "trusted CA file")? {
        roots.add(c).map_err(|e| Error::Config(format!("CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    /// Builds a server configuration from the files as they are now. `alpn`: the protocols the port speaks.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let builder = if self.require_client_cert {
            let ca = self
                .trusted_ca
                .as_ref()
                .ok_or_else(|| Error::Config("client certificate authentication needs a trusted CA file".into()))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| Error::Config(format!("TLS client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certs(&self.cert, "certificate file")?, key(&self.key)?)
            .map_err(|e| Error::Config(format!("TLS certificate {}: {e}", self.cert.display())))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// tonic's client configuration for connecting out with these files: trust `trusted_ca`, present `cert`.
    pub fn client_config(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let mut c = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.trusted_ca {
            certs(ca, "trusted CA file")?; // a clear error now rather than a handshake failure later
            c = c.ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "trusted CA file")?));
        }
        certs(&self.cert, "certificate file")?;
        key(&self.key)?;
        Ok(c.identity(tonic::transport::Identity::from_pem(
            read(&self.cert, "certificate file")?,
            read(&self.key, "key file")?,
        )))
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        [Some(&self.cert), Some(&self.key), self.trusted_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// A server TLS configuration that follows its files. Cheap to clone.
#[derive(Clone)]
pub struct ReloadingServer {
    inner: Arc<ReloadingInner>,
}

struct ReloadingInner {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    what: &'static str,
    current: RwLock<(Arc<ServerConfig>, Vec<Option<SystemTime>>)>,
    /// Bumped on every successful reload (outgoing channel caches compare it to drop stale connections).
    generation: AtomicU64,
}

impl ReloadingServer {
    /// Loads the files (failing start-up with a clear error if they are unusable).
    pub fn new(files: TlsFiles, alpn: Vec<&'static [u8]>, what: &'static str) -> Result<Self> {
        let stamp = files.modified();
        let config = files.server_config(&alpn).map_err(|e| Error::Config(format!("{what} TLS: {e}")))?;
        Ok(Self {
            inner: Arc::new(ReloadingInner {
                files,
                alpn,
                what,
                current: RwLock::new((Arc::new(config), stamp)),
                generation: AtomicU64::new(0),
            }),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.current.read().0.clone())
    }

    /// Reloads if the files changed since the last load (or always, with `force`). Returns true on a reload.
    pub fn reload(&self, force: bool) -> bool {
        let stamp = self.inner.files.modified();
        if !force && self.inner.current.read().1 == stamp {
            return false;
        }
        match self.inner.files.server_config(&self.inner.alpn) {
            Ok(config) => {
                *self.inner.current.write() = (Arc::new(config), stamp);
                self.inner.generation.fetch_add(1, Ordering::Relaxed);
                tracing::info!(port = self.inner.what, cert = %self.inner.files.cert.display(), "TLS certificates reloaded");
                true
            }
            Err(e) => {
                // Remember the stamp so a broken file is reported once, not every poll.
                self.inner.current.write().1 = stamp;
                tracing::error!(port = self.inner.what, "TLS reload failed, keeping the previous certificates: {e}");
                false
            }
        }
    }
}

/// Reloads every given configuration when its files change or the process gets SIGHUP, until `stop` resolves.
pub fn spawn_reloader(servers: Vec<ReloadingServer>, stop: impl std::future::Future<Output = ()> + Send + 'static) {
    if servers.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tokio::pin!(stop);
        loop {
            let force = tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            for s in &servers {
                s.reload(force);
            }
        }
    });
}

/// Accepts TCP connections and completes TLS handshakes concurrently (a slow client cannot hold up others);
/// yields only connections whose handshake succeeded.
pub fn accept_tls(
    listener: TcpListener,
    tls: ReloadingServer,
) -> tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // Closed first: once the server is gone, not one more connection is taken from the socket (a duplicate of
            // it may be served by someone else, see `http::StartingHttp`).
            let accepted = tokio::select! {
                biased;
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            let what = tls.inner.what;
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(port = what, %peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(port = what, %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// The stream of TLS connections tonic serves.
pub fn tonic_incoming(
    listener: TcpListener,
    tls: ReloadingServer,
) -> impl futures::Stream<Item = io::Result<TlsStream<TcpStream>>> {
    tokio_stream::wrappers::ReceiverStream::new(accept_tls(listener, tls)).map(|(s, _)| Ok::<_, io::Error>(s)).boxed()
}

use futures::StreamExt;

/// axum's listener over TLS connections.
pub struct AxumTlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl AxumTlsListener {
    pub fn new(listener: TcpListener, tls: ReloadingServer) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self { rx: accept_tls(listener, tls), local })
    }
}

impl axum::serve::Listener for AxumTlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor only ends when this listener is dropped; never hand axum a fake connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The files for the client side of a connection (`raftkv` CLI, bench, chaos): `--cacert`, `--cert`, `--key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    pub fn is_set(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }

    /// tonic's client TLS configuration; an error names the flag whose file is unusable.
    pub fn config(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let mut c = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.cacert {
            certs(ca, "--cacert file")?;
            c = c.ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "--cacert file")?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(k)) => {
                certs(cert, "--cert file")?;
                key(k)?;
                c = c
                    .identity(tonic::transport::Identity::from_pem(read(cert, "--cert file")?, read(k, "--key file")?));
            }
            (None, None) => {}
            _ => return Err(Error::Config("--cert and --key go together".into())),
        }
        Ok(c)
    }
}

impl ClientTls {
    /// A rustls connector for plain HTTP/1.1 over TLS (the HTTP port): trusts `--cacert`, presents `--cert`.
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector> {
        let ca = self.cacert.as_ref().ok_or_else(|| Error::Config("TLS to the HTTP port needs --cacert".into()))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots(ca)?);
        let config = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(certs(c, "--cert file")?, key(k)?)
                .map_err(|e| Error::Config(format!("--cert/--key: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// A connector for a health probe of the node on this machine (`raftkv probe`): it encrypts, but trusts whatever
/// certificate the node presents, as a kubelet's HTTPS probe does. The probe sends nothing secret and learns only a
/// status code, and the server's certificate names the node's public names, which need not include the loopback
/// address the probe dials. Handshake signatures are still checked.
pub fn probe_connector() -> Result<tokio_rustls::TlsConnector> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider())))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// See [`probe_connector`]: accepts any server certificate, verifies the handshake's signatures with it.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends one raw HTTP/1.1 request (with `Connection: close`) to `addr` and returns the whole response, over TLS
/// when a connector is given.
pub async fn http_exchange(addr: &str, request: String, tls: Option<tokio_rustls::TlsConnector>) -> io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = TcpStream::connect(addr).await?;
    let mut out = Vec::new();
    match tls {
        None => {
            let mut s = tcp;
            s.write_all(request.as_bytes()).await?;
            s.read_to_end(&mut out).await?;
        }
        Some(connector) => {
            let host = crate::origin::host_name(addr).trim_start_matches('[').trim_end_matches(']').to_string();
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let mut s = connector.connect(name, tcp).await?;
            s.write_all(request.as_bytes()).await?;
            // A server may close without close_notify after `Connection: close`; keep what arrived.
            match s.read_to_end(&mut out).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The client files [`make_test_pki`] wrote into `dir`.
pub fn test_pki_client(dir: &Path) -> ClientTls {
    ClientTls {
        cacert: Some(dir.join("ca.pem")),
        cert: Some(dir.join("client.pem")),
        key: Some(dir.join("client-key.pem")),
    }
}

/// `raftkv serve` flags for node `id` of a [`make_test_pki`] directory: TLS on every port, client certificates
/// required, mutual TLS between peers.
pub fn test_pki_serve_args(dir: &Path, id: u64) -> Vec<String> {
    let f = |name: &str| dir.join(name).display().to_string();
    let (cert, key, ca) = (f(&format!("node-{id}.pem")), f(&format!("node-{id}-key.pem")), f("ca.pem"));
    [
        ("--cert-file", &cert),
        ("--key-file", &key),
        ("--trusted-ca-file", &ca),
        ("--peer-cert-file", &cert),
        ("--peer-key-file", &key),
        ("--peer-trusted-ca-file", &ca),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v.clone()])
    .chain(std::iter::once("--client-cert-auth".to_string()))
    .collect()
}

/// Makes a throwaway CA and, for each node, one certificate valid for `hosts` as server and client (for
/// `raftkv cluster --tls` and tests). Writes `ca.pem`, `ca-key.pem`, `node-ID.pem`, `node-ID-key.pem`,
/// `client.pem` and `client-key.pem` into `dir`.
pub fn make_test_pki(dir: &Path, node_ids: &[u64], hosts: &[String]) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| Error::Internal(format!("making certificates: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create certificate directory", e))?;
    let write = |name: &str, body: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| Error::io(&p, "write certificate", e))
    };
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "raftkv throwaway CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    write("ca.pem", ca.pem())?;
    let mut names: Vec<String> = node_ids.iter().map(|id| format!("node-{id}")).collect();
    names.push("client".into());
    for name in names {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, name.clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        write(&format!("{name}.pem"), cert.pem())?;
        write(&format!("{name}-key.pem"), key.serialize_pem())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            trusted_ca: Some(dir.join("ca.pem")),
            require_client_cert: true,
        }
    }

    #[test]
    fn certificates_reload_when_their_files_change_and_a_broken_file_keeps_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        make_test_pki(dir.path(), &[1], &["127.0.0.1".into()]).unwrap();
        let f = files(dir.path(), "node-1");
        let server = ReloadingServer::new(f.clone(), vec![b"h2"], "test").unwrap();
        assert!(!server.reload(false), "nothing changed");
        assert_eq!(server.generation(), 0);

        // New certificates (another CA): picked up, without a restart.
        make_test_pki(dir.path(), &[1], &["127.0.0.1".into()]).unwrap();
        assert!(server.reload(true));
        assert_eq!(server.generation(), 1);

        // A half-written key: refused, the previous configuration stays in use.
        std::fs::write(&f.key, "-----BEGIN PRIVATE KEY-----\ngarbage").unwrap();
        assert!(!server.reload(true));
        assert_eq!(server.generation(), 1, "a broken file is not loaded");

        // A missing file is a clear error at start-up.
        let missing = TlsFiles { cert: dir.path().join("nope.pem"), ..f };
        let err = ReloadingServer::new(missing, vec![b"h2"], "test").err().unwrap().to_string();
        assert!(err.contains("nope.pem"), "{err}");
    }
}
