//! Not built yet (issue 3).

use std::net::TcpListener;

use crate::{ServerConfig, ServerError, Shutdown};

/// Runs the server until `shutdown` (not built yet).
pub fn run(
    _listener: TcpListener,
    _config: ServerConfig,
    _shutdown: Shutdown,
) -> Result<(), ServerError> {
    Err(ServerError::Config(
        "this architecture is not built yet".into(),
    ))
}
