//! Slowloris sockets (scenario `silent_connections`): TCP connections a one-process run opens to
//! its first target before the ramp and holds, silent (not a byte sent), until the run ends, so
//! that the run measures whether the server still lets its normal clients in while they occupy
//! it (a thread-per-connection server answers 503 once its pool is taken).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Time the server gets to accept the silent sockets before the ramp starts.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Silent sockets held open; dropping it closes them.
pub struct Silent {
    streams: Vec<TcpStream>,
}

impl Silent {
    /// Opens `n` connections to `addr` (each within `timeout`; one that fails or times out is
    /// not held), then waits [`SETTLE`] when there are any.
    pub async fn open(addr: SocketAddr, n: u32, timeout: Duration) -> Silent {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            set.spawn(tokio::time::timeout(timeout, TcpStream::connect(addr)));
        }
        let mut streams = Vec::with_capacity(n as usize);
        while let Some(done) = set.join_next().await {
            if let Ok(Ok(Ok(s))) = done {
                streams.push(s);
            }
        }
        if n > 0 {
            tokio::time::sleep(SETTLE).await;
        }
        Silent { streams }
    }

    /// The sockets held.
    pub fn held(&self) -> u64 {
        self.streams.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_and_holds_silent_sockets_that_send_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let silent = Silent::open(addr, 5, Duration::from_secs(5)).await;
        assert_eq!(silent.held(), 5);
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::io::AsyncReadExt::read(&mut conn, &mut buf),
        )
        .await;
        assert!(read.is_err(), "a silent socket sent {read:?}");
        drop(silent);
        let n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf)
            .await
            .expect("read");
        assert_eq!(n, 0, "the socket is closed when dropped");
    }

    #[tokio::test]
    async fn a_refused_socket_is_not_held() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        assert_eq!(
            Silent::open(addr, 3, Duration::from_secs(5)).await.held(),
            0
        );
    }
}
