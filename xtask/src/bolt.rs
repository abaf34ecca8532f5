//! The Bolt handshake, just enough to tell "a Bolt server answers on this port".
//!
//! A TCP connect alone is not readiness: ArcadeDB opens its Bolt listener
//! before the default database exists, and a port can be held by something
//! that is not a Bolt server at all. The handshake is the first exchange of
//! every Bolt session: the client sends the magic preamble `0x6060B017`
//! followed by four version proposals (big-endian u32 each), the server
//! answers with the four bytes of the version it picked, or zeros when it
//! speaks none of them. No crate needed: 20 bytes out, 4 bytes in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The Bolt magic preamble.
pub const MAGIC: [u8; 4] = [0x60, 0x60, 0xB0, 0x17];

/// Our version proposals, most preferred first. Bolt 4.3+ encodes a proposal
/// as `[0, range, minor, major]`: "major.minor down to major.(minor - range)".
/// We offer 5.0–5.4, 4.0–4.4, 4.4 exactly and 3.0, which covers Neo4j 3.5 to
/// 5.x and ArcadeDB (Bolt v4).
pub const PROPOSALS: [[u8; 4]; 4] = [
    [0x00, 0x04, 0x04, 0x05],
    [0x00, 0x04, 0x04, 0x04],
    [0x00, 0x00, 0x04, 0x04],
    [0x00, 0x00, 0x00, 0x03],
];

/// A Bolt protocol version agreed in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoltVersion {
    pub major: u8,
    pub minor: u8,
}

impl std::fmt::Display for BoltVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What the server answered to the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeReply {
    /// The server picked this version.
    Agreed(BoltVersion),
    /// The server speaks Bolt, but none of our versions (it answered zeros).
    NoCommonVersion,
}

/// The 20 bytes a client sends to open a Bolt session.
pub fn handshake_request() -> [u8; 20] {
    let mut request = [0u8; 20];
    request[..4].copy_from_slice(&MAGIC);
    for (slot, proposal) in request[4..].chunks_exact_mut(4).zip(PROPOSALS.iter()) {
        slot.copy_from_slice(proposal);
    }
    request
}

/// Interprets the server's 4-byte answer.
///
/// Anything other than zeros or a version we proposed means the peer is not
/// a Bolt server (an HTTP server answers `HTTP`, for instance).
pub fn parse_reply(reply: [u8; 4]) -> Result<HandshakeReply, String> {
    match reply {
        [0, 0, 0, 0] => Ok(HandshakeReply::NoCommonVersion),
        [0, _, minor, major] if offered(major, minor) => {
            Ok(HandshakeReply::Agreed(BoltVersion { major, minor }))
        }
        other => Err(format!(
            "not a Bolt handshake answer: {:02x} {:02x} {:02x} {:02x}",
            other[0], other[1], other[2], other[3]
        )),
    }
}

fn offered(major: u8, minor: u8) -> bool {
    PROPOSALS
        .iter()
        .any(|&[_, range, top_minor, proposed_major]| {
            proposed_major == major
                && minor <= top_minor
                && minor >= top_minor.saturating_sub(range)
        })
}

/// Connects to `host:port` and performs the handshake.
///
/// `Err` carries a one-line reason (refused, timed out, not Bolt...).
pub fn probe(host: &str, port: u16, timeout: Duration) -> Result<HandshakeReply, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .collect();
    let mut last_error = format!("{host}:{port} resolves to no address");
    for addr in addrs {
        match probe_addr(addr, timeout) {
            Ok(reply) => return Ok(reply),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn probe_addr(addr: SocketAddr, timeout: Duration) -> Result<HandshakeReply, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("configure socket {addr}: {e}"))?;
    stream
        .write_all(&handshake_request())
        .map_err(|e| format!("send handshake to {addr}: {e}"))?;
    let mut reply = [0u8; 4];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("read handshake answer from {addr}: {e}"))?;
    parse_reply(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn request_is_magic_then_four_proposals() {
        let request = handshake_request();
        assert_eq!(&request[..4], &[0x60, 0x60, 0xB0, 0x17]);
        assert_eq!(&request[4..8], &[0x00, 0x04, 0x04, 0x05]);
        assert_eq!(&request[8..12], &[0x00, 0x04, 0x04, 0x04]);
        assert_eq!(&request[16..20], &[0x00, 0x00, 0x00, 0x03]);
    }

    #[test]
    fn reply_with_a_proposed_version_is_agreed() {
        assert_eq!(
            parse_reply([0, 0, 4, 4]),
            Ok(HandshakeReply::Agreed(BoltVersion { major: 4, minor: 4 }))
        );
        assert_eq!(
            parse_reply([0, 0, 1, 4]),
            Ok(HandshakeReply::Agreed(BoltVersion { major: 4, minor: 1 }))
        );
        assert_eq!(
            parse_reply([0, 0, 0, 3]),
            Ok(HandshakeReply::Agreed(BoltVersion { major: 3, minor: 0 }))
        );
    }

    #[test]
    fn zeros_mean_no_common_version() {
        assert_eq!(
            parse_reply([0, 0, 0, 0]),
            Ok(HandshakeReply::NoCommonVersion)
        );
    }

    #[test]
    fn http_or_unproposed_versions_are_rejected() {
        assert!(parse_reply(*b"HTTP").is_err());
        // 5.7 was never proposed (we offer 5.0-5.4).
        assert!(parse_reply([0, 0, 7, 5]).is_err());
        assert!(parse_reply([0, 0, 0, 2]).is_err());
    }

    /// A fake server on an ephemeral port: checks the request, answers `reply`.
    fn fake_server(reply: [u8; 4]) -> (u16, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        let handle = thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut request = vec![0u8; 20];
            socket.read_exact(&mut request).expect("read request");
            socket.write_all(&reply).expect("write reply");
            request
        });
        (port, handle)
    }

    #[test]
    fn probe_talks_to_a_bolt_speaking_socket() {
        let (port, server) = fake_server([0, 0, 4, 4]);
        let reply = probe("127.0.0.1", port, Duration::from_secs(5));
        assert_eq!(
            reply,
            Ok(HandshakeReply::Agreed(BoltVersion { major: 4, minor: 4 }))
        );
        assert_eq!(server.join().expect("server thread"), handshake_request());
    }

    #[test]
    fn probe_reports_a_non_bolt_peer() {
        let (port, server) = fake_server(*b"HTTP");
        let reply = probe("127.0.0.1", port, Duration::from_secs(5));
        assert!(reply.is_err(), "{reply:?}");
        server.join().expect("server thread");
    }

    #[test]
    fn probe_reports_a_closed_port() {
        // Bind then drop: the port is free (and refused) right after.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let reply = probe("127.0.0.1", port, Duration::from_secs(2));
        let message = reply.expect_err("nothing listens there");
        assert!(message.contains("connect"), "{message}");
    }
}
