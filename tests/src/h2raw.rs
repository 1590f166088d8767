//! HTTP/2 by hand: frames written and read as bytes over a TLS connection that negotiated h2,
//! for tests that need to see (or send) what a library client hides: frame boundaries, flags,
//! floods, resets.

use crate::TestCert;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TLS connection to `addr` for `galion.app` that negotiated h2.
pub async fn tls_h2(addr: SocketAddr, cert: &TestCert) -> TlsStream<tokio::net::TcpStream> {
    proxy_core::install_crypto_provider();
    let mut store = rustls::RootCertStore::empty();
    store
        .add(rustls_pki_types::CertificateDer::from(cert.der.clone()))
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("galion.app").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types and the ACK flag (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
/// ACK on SETTINGS and PING.
pub const ACK: u8 = 0x1;
/// END_STREAM on DATA and HEADERS.
pub const END_STREAM: u8 = 0x1;

/// One HTTP/2 frame, by hand (RFC 9113 §4.1).
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A HEADERS frame for `GET https://AUTHORITY PATH`, ending the stream, HPACK-encoded with
/// static-table names and literals only (no dynamic table).
pub fn get_headers(stream: u32, authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
    block.push(0x04); // :path, literal without indexing
    block.push(path.len() as u8);
    block.extend_from_slice(path.as_bytes());
    block.push(0x01); // :authority, literal without indexing
    block.push(authority.len() as u8);
    block.extend_from_slice(authority.as_bytes());
    frame(HEADERS, 0x4 | 0x1, stream, &block)
}

/// Reads one frame: (type, flags, stream, payload); `None` at the end of the connection.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

/// The next frame within 10 s, answering a SETTINGS frame with its ACK on `wr` on the way.
/// Panics if none comes or the connection ends.
pub async fn next_frame<R, W>(rd: &mut R, wr: &mut W) -> (u8, u8, u32, Vec<u8>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let f = tokio::time::timeout(Duration::from_secs(10), read_frame(rd))
        .await
        .expect("a frame within 10 s")
        .expect("the connection stays open");
    if f.0 == SETTINGS && f.1 & ACK == 0 {
        wr.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    }
    f
}
