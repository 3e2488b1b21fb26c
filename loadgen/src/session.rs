//! A protocol profile's session set-up over a live WebSocket: the handshake after the
//! WebSocket opens ([`open_session`]) and joining a room ([`join`]). The profiles themselves
//! (options, framing, decoding: pure) live in `chatbench_model::profile`; this is the only part
//! of them that does I/O, inside the engine's boxed connection set-up.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use chatbench_model::profile::{socketio, Kind, Profile, Step};

use crate::stats::Stats;
use crate::target::Transport;

/// Reads frames until `step` says done or failed; answers replies; counts bad frames.
async fn converse<S: Transport>(
    ws: &mut WebSocketStream<S>,
    stats: &Stats,
    what: &str,
    mut step: impl FnMut(&str) -> Step,
) -> Result<(), String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match step(&t) {
                Step::Done => return Ok(()),
                Step::Continue => {}
                Step::Reply(r) => ws
                    .send(Message::text(r))
                    .await
                    .map_err(|_| format!("{what}_send"))?,
                Step::Bad => stats.bad_frame(&t),
                Step::Fail(label) => return Err(label),
            },
            Some(Ok(Message::Close(f))) => {
                let code = f
                    .map(|f| u16::from(f.code).to_string())
                    .unwrap_or_else(|| "none".into());
                stats.closed_by_server.add(&code);
                return Err(format!("closed_during_{what}"));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(format!("reset_during_{what}")),
        }
    }
}

/// The handshake after the WebSocket opens, before any room is joined (Socket.IO: the
/// Engine.IO open packet and the namespace connect). Errors are connect-error labels.
pub async fn open_session<S: Transport>(
    profile: &Profile,
    ws: &mut WebSocketStream<S>,
    stats: &Stats,
) -> Result<(), String> {
    match &profile.kind {
        Kind::SocketIo(s) => {
            // The Engine.IO open packet, then our namespace connect and its acknowledgement.
            converse(ws, stats, "open", socketio::open_step).await?;
            ws.send(Message::text(s.connect_frame()))
                .await
                .map_err(|_| "open_send".to_string())?;
            converse(ws, stats, "open", |t| s.connect_step(t)).await
        }
        _ => Ok(()),
    }
}

/// Joins `room` and waits for the server's acknowledgement when the protocol has one.
pub async fn join<S: Transport>(
    profile: &Profile,
    ws: &mut WebSocketStream<S>,
    stats: &Stats,
    room: &str,
) -> Result<(), String> {
    let Some(frame) = profile.join_frame(room) else {
        return Ok(());
    };
    ws.send(Message::text(frame))
        .await
        .map_err(|_| "join_send".to_string())?;
    if let Kind::Template(t) = &profile.kind {
        if !t.waits_for_join() {
            return Ok(());
        }
    }
    if let Kind::SocketIo(s) = &profile.kind {
        if !s.join_ack {
            return Ok(());
        }
    }
    converse(ws, stats, "join", |t| match profile.join_step(room, t) {
        Step::Done => Step::Done,
        Step::Fail(label) => {
            stats.server_errors.add(&label);
            Step::Fail(label)
        }
        other => other,
    })
    .await
}
