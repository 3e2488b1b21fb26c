//! Listening sockets.
//!
//! `TcpListener::bind` in std, mio and tokio listens with a backlog of 128, which overflows in
//! a connection storm (dropped SYNs, then 1 s retransmit stalls that look like server latency).
//! Every architecture therefore binds through [`bind`], which uses socket2 to set `SO_REUSEADDR`
//! and the configured backlog, and returns a plain blocking std listener that each architecture
//! converts to what it needs.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `addr` with `SO_REUSEADDR` and listens with `backlog` (the kernel caps it at
/// `net.core.somaxconn`). The listener is blocking; callers set non-blocking as they need.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Behave like std: an IPv6 listener does not also take IPv4 connections.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_ephemeral_port_and_accepts() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 8192).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert!(peer.ip().is_loopback());
    }
}
