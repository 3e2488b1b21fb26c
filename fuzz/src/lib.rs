//! The fuzz targets of chatbench's network-facing parsers (issue 19 item 7), one function per
//! target taking any bytes. Each must return without panicking, whatever the bytes; where a
//! cheap oracle exists it is asserted too (an accepted frame re-encodes to what decodes alike,
//! a decoder never consumes more than it was given).
//!
//! The same functions run in two places: AFL++ drives them through `src/bin/afl.rs`
//! (`scripts/fuzz.sh TARGET SECONDS`, stable Rust via afl.rs), and `tests/corpus.rs` replays
//! every committed input under `fuzz/corpus/TARGET/` in a normal `cargo test`.

use std::borrow::Cow;

use bytes::Bytes;
use chatbench_loadgen::control::{decode_hist, parse_line, FromAgent, ToAgent};
use chatbench_loadgen::plan::{Layout, Plan, MAX_AGENTS};
use chatbench_loadgen::schedule::Schedule;
use chatbench_model::scenario::Scenario;
use chatbench_protocol::{parse_client, parse_server, validate_room, ClientFrame};
use chatbench_servers::cluster::{auth, wire};
use chatbench_servers::epoll::frame;
use chatbench_servers::http::{self, Head};

/// A fuzz target: any bytes in, a panic only on a defect.
pub type Target = fn(&[u8]);

/// Every target, by name (the name is also its corpus folder).
pub const TARGETS: [(&str, Target); 6] = [
    ("protocol", protocol),
    ("frame", ws_frame),
    ("http", http_upgrade),
    ("wire", mesh_wire),
    ("control", control),
    ("scenario", scenario),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The names of every target.
pub fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|(n, _)| *n).collect()
}

/// Largest frame and message the codec targets accept (small, so the fuzzer reaches the
/// too-large paths with short inputs).
const MAX: usize = 4096;
/// Most connections a scenario may plan in the scenario target (an agent checks its share
/// against its descriptor limit before planning; this keeps one execution short).
const MAX_PLANNED: u64 = 4000;

/// The client protocol (`protocol/`): client and server frames from any text; an accepted
/// `msg` names a room the room rules accept.
pub fn protocol(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ClientFrame::Join { room } | ClientFrame::Leave { room }) = parse_client(text) {
        assert!(validate_room(&room).is_ok(), "accepted room {room:?}");
    } else if let Ok(ClientFrame::Msg(m)) = parse_client(text) {
        assert!(
            validate_room(&m.room).is_ok(),
            "accepted msg room {:?}",
            m.room
        );
    }
    let _ = parse_server(text);
}

/// The epoll server's WebSocket frame codec: the input as a stream of client frames, decoded
/// in order as the server does (fragments carried across frames), until it needs more bytes or
/// refuses one. Each step consumes at least one byte and never more than it was given.
pub fn ws_frame(data: &[u8]) {
    let mut buf = data.to_vec();
    let mut frag: frame::Fragments = None;
    let mut at = 0;
    while at < buf.len() {
        let rest = &mut buf[at..];
        let len = rest.len();
        let used = match frame::decode(rest, &mut frag, MAX) {
            Ok(frame::Step::NeedMore) | Err(_) => break,
            Ok(frame::Step::Fragment(n)) => n,
            Ok(frame::Step::Message(n, msg)) => {
                if let frame::Message::Text(Cow::Borrowed(t)) = &msg {
                    assert!(t.len() <= MAX);
                }
                n
            }
        };
        assert!(used > 0 && used <= len, "consumed {used} of {len} bytes");
        at += used;
    }
    // Round trip: the first byte picks fin and opcode, the next four the mask, the rest is the
    // payload; a frame the encoder makes decodes to its payload.
    if let [b0, m0, m1, m2, m3, payload @ ..] = data {
        let opcode = b0 & 0x0f;
        if opcode == 0x1 && b0 & 0x80 != 0 && payload.len() <= MAX {
            if let Ok(text) = std::str::from_utf8(payload) {
                let mut enc = frame::encode_client_frame(true, 0x1, payload, [*m0, *m1, *m2, *m3]);
                let mut none = None;
                match frame::decode(&mut enc, &mut none, MAX) {
                    Ok(frame::Step::Message(_, frame::Message::Text(t))) => assert_eq!(t, text),
                    other => panic!("an encoded text frame decoded to {other:?}"),
                }
            }
        }
    }
}

/// The HTTP upgrade parser of every architecture: a request head from any bytes; a complete
/// head is never longer than the input.
pub fn http_upgrade(data: &[u8]) {
    match http::parse_head(data) {
        Ok(Head::Complete { head_len, route }) => {
            assert!(
                head_len <= data.len(),
                "head of {head_len} in {} bytes",
                data.len()
            );
            let _ = route.path();
        }
        Ok(Head::Partial) => {}
        Err(reject) => {
            let _ = http::reject_response(reject);
        }
    }
}

/// The mesh backplane's wire decoder (and the length prefix): the first four bytes as a length
/// prefix, the rest as a frame body. An accepted frame re-encodes to a frame that decodes to
/// the same frame. The authentication checks take the input as a proof and as a frame tag:
/// bytes that are not the HMAC are refused, the real HMAC accepted.
pub fn mesh_wire(data: &[u8]) {
    mesh_auth(data);
    if let Some(prefix) = data.get(..4) {
        let prefix = [prefix[0], prefix[1], prefix[2], prefix[3]];
        let _ = wire::frame_len(prefix, wire::max_frame_len(MAX));
        let _ = wire::frame_len(prefix, wire::MAX_HANDSHAKE_FRAME);
    }
    let Ok(frame) = wire::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = wire::encode(&frame);
    let body = encoded.slice(4..);
    assert_eq!(
        wire::frame_len([encoded[0], encoded[1], encoded[2], encoded[3]], usize::MAX),
        Ok(body.len()),
        "the length prefix of a re-encoded {frame:?}"
    );
    match wire::decode(body) {
        Ok(again) => assert_eq!(again, frame, "re-encoded frame decodes differently"),
        Err(e) => panic!("re-encoded {frame:?} does not decode: {e}"),
    }
}

fn mesh_auth(data: &[u8]) {
    const SECRET: &[u8] = b"fuzz secret";
    let party = |node_id, byte| auth::Party {
        node_id,
        incarnation: node_id ^ 0xfeed,
        nonce: [byte; auth::NONCE_LEN],
    };
    let (from, to) = (party(1, 0xaa), party(2, 0x55));
    let real = auth::proof(SECRET, &from, &to);
    assert_eq!(
        auth::check_proof(SECRET, &from, &to, data),
        data == real.as_slice(),
        "a proof of {} bytes",
        data.len()
    );
    let mut signer = auth::FrameTags::new(SECRET, &from, &to);
    let mut checker = auth::FrameTags::new(SECRET, &from, &to);
    let first = signer.sign(&[data]);
    assert!(checker.verify(&[data], &first), "the real tag is refused");
    // The input's bytes as the next frame's tag: accepted only if they are that tag.
    let second = signer.sign(&[data]);
    assert_eq!(checker.verify(&[data], data), data == second.as_slice());
    // A replayed tag is refused (each frame's tag covers its sequence number).
    assert!(
        !checker.verify(&[data], &first),
        "a replayed tag is accepted"
    );
}

/// The agent's control-message decoder: any line as a message to an agent or from one, any
/// text as a histogram. A `setup` goes through the agent's checks in their order (scenario
/// parsed, agent count and id bounded, share counted before the plan is built).
pub fn control(data: &[u8]) {
    let _ = parse_line::<FromAgent>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_hist(text);
    }
    let Ok(ToAgent::Setup(setup)) = parse_line::<ToAgent>(data) else {
        return;
    };
    let Ok(s) = Scenario::parse(&setup.scenario, "<fuzz>") else {
        return;
    };
    if setup.agents > MAX_AGENTS || setup.agent >= setup.agents {
        return;
    }
    let layout = Layout {
        agents: setup.agents,
        targets: u32::try_from(setup.targets.len()).unwrap_or(u32::MAX),
        policy: s.target_policy,
    };
    if layout.problem(&s).is_some() {
        return;
    }
    let share = Plan::count_for_agent(&s, setup.agent, &layout);
    if share <= MAX_PLANNED {
        let plan = Plan::for_agent(&s, setup.agent, &layout);
        assert_eq!(
            plan.conns.len() as u64,
            share,
            "the counted share is the plan's"
        );
    }
}

/// The scenario parser and validator: any text is a scenario or an error; every accepted
/// scenario's timeline fits the clock and its plan builds for a few layouts, and its send
/// schedule starts, without a panic.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = Scenario::parse(text, "fuzz.toml") else {
        return;
    };
    let n = u64::from(s.connections);
    let end = std::time::Instant::now()
        .checked_add(s.connect_deadline(n, s.max_ramp_hold(n)))
        .and_then(|t| t.checked_add(s.total_duration()))
        .and_then(|t| t.checked_add(s.reconnect.deadline + s.reconnect.max_backoff));
    assert!(end.is_some(), "the timeline overflows the clock");
    let _ = (
        s.expected_msgs_per_sec(),
        s.expected_deliveries_per_sec(),
        s.ramp_duration(),
        s.session_profile(),
    );
    for (agents, targets) in [(1, 1), (3, 2)] {
        let layout = Layout {
            agents,
            targets,
            policy: s.target_policy,
        };
        if layout.problem(&s).is_some() {
            continue;
        }
        let shares: Vec<u64> = (0..agents)
            .map(|a| Plan::count_for_agent(&s, a, &layout))
            .collect();
        assert_eq!(
            shares.iter().sum::<u64>(),
            n,
            "the shares add up to the run"
        );
        if n > MAX_PLANNED {
            continue;
        }
        assert_eq!(Plan::counts_per_agent(&s, &layout), shares);
        for (a, &share) in (0..agents).zip(&shares) {
            let p = Plan::for_agent(&s, a, &layout);
            assert_eq!(p.conns.len() as u64, share);
            let _ = (p.readers_per_room(), p.slow_count(), p.sender_count());
        }
    }
    if s.sender_count() > 0 {
        let sched = Schedule::new(s.arrival, s.rate_per_sender, s.measure, 1);
        assert!(sched.take(1000).count() <= 1000);
    }
}
