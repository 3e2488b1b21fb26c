// A chat room server on Node.js and the `ws` library, written the way that ecosystem would:
// one process, one event loop, a Map of rooms to Sets of sockets. It speaks three protocols,
// chosen by the request path, so that chatbench can measure it with three profiles:
//
//   /echo  every message is sent back to its sender (chatbench protocol = "echo");
//   /chat  a home-grown JSON protocol (protocol = "template", see docs/profiles.md):
//          {"action":"subscribe","topic":T} -> {"event":"subscribed","topic":T}
//          {"action":"unsubscribe","topic":T}
//          {"action":"publish","topic":T,"data":D} -> {"event":"message","topic":T,"data":D}
//          to every other subscriber;
//   other  chatbench wire protocol v1 (docs/protocol.md; protocol = "chatbench"): join/joined,
//          leave, and msg frames forwarded byte for byte to the room's other members.
//
// Usage: node ws-room.js [--listen HOST:PORT] [--fault-injection] [--outbound-queue-bytes N]
//          [--slow-consumer-grace DURATION]   (prints its address on stdout)
// With --fault-injection, a v1 frame {"t":"panic"} throws from the message handler, uncaught, as
// a bug in a plain Node server would: the whole process dies (docs/protocol.md, "Fault
// injection"). Without it, "panic" is an unknown_type error like any other.
// Limits (counted on stderr at exit): 64 KiB messages (larger: close 1009), 16 rooms per
// connection, and the slow-consumer rule of chatbench's own servers (servers/src/chat.rs,
// FanOut): a forwarded frame that would take a recipient's unsent bytes (`ws` bufferedAmount)
// past --outbound-queue-bytes (4 MiB) is dropped (drop newest), and a recipient whose frames
// keep being dropped with nothing written to it for --slow-consumer-grace (10 s) gets an
// `error` slow_consumer and close 1008 (its socket destroyed a second later if it does not
// read them), as NATS disconnects a slow consumer, so that a stalled client cannot pin its
// bytes forever. GET /metrics counts both (chatbench_drops_total{reason="queue_bytes"},
// chatbench_disconnects_total{reason="slow_consumer"}) beside the bytes queued now.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');
const {
  parseFlags, PoisonFrame, announce, count, stopOnSignal, validRoom, parseDurationMs,
} = require('./common');

const NAME = 'node-ws';
const MAX_PAYLOAD = 64 * 1024;
const MAX_ROOMS_PER_CONN = 16;
/** A kicked slow consumer that does not read its close frame is destroyed after this long. */
const CLOSE_TIMEOUT_MS = 1000;

const { host, port, values } = parseFlags(process.argv, 'ws-room', {
  'fault-injection': { type: 'boolean', default: false },
  'outbound-queue-bytes': { type: 'string', default: String(4 * 1024 * 1024) },
  'slow-consumer-grace': { type: 'string', default: '10s' },
});
const FAULT_INJECTION = values['fault-injection'];
const OUTBOUND_QUEUE_BYTES = Number(values['outbound-queue-bytes']);
const SLOW_CONSUMER_GRACE_MS = parseDurationMs(values['slow-consumer-grace']);
if (!Number.isSafeInteger(OUTBOUND_QUEUE_BYTES) || OUTBOUND_QUEUE_BYTES < 1) {
  console.error(`ws-room: --outbound-queue-bytes ${JSON.stringify(values['outbound-queue-bytes'])}: expected a positive integer`);
  process.exit(2);
}
if (SLOW_CONSUMER_GRACE_MS === null) {
  console.error(`ws-room: --slow-consumer-grace ${JSON.stringify(values['slow-consumer-grace'])}: expected a duration, e.g. 10s, 300ms, 1m30s`);
  process.exit(2);
}

/** What /metrics reports beside the connections and the bytes queued now. */
const totals = { dropsQueueBytes: 0, slowConsumerDisconnects: 0 };

function metricsText() {
  let queued = 0;
  for (const ws of wss.clients) queued += ws.bufferedAmount;
  return [
    '# TYPE chatbench_connections gauge',
    `chatbench_connections ${wss.clients.size}`,
    '# TYPE chatbench_drops_total counter',
    `chatbench_drops_total{reason="queue_bytes"} ${totals.dropsQueueBytes}`,
    '# TYPE chatbench_disconnects_total counter',
    `chatbench_disconnects_total{reason="slow_consumer"} ${totals.slowConsumerDisconnects}`,
    '# TYPE chatbench_outbound_queued_bytes gauge',
    `chatbench_outbound_queued_bytes ${queued}`,
    '',
  ].join('\n');
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && (req.url || '').split('?')[0] === '/metrics') {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(metricsText());
    return;
  }
  res.writeHead(426, { 'content-type': 'text/plain' });
  res.end('WebSocket only\n');
});
const wss = new WebSocketServer({ server, maxPayload: MAX_PAYLOAD, perMessageDeflate: false });

/** room name -> Set of sockets, per protocol (a /chat topic is not a chatbench room). */
const rooms = { v1: new Map(), chat: new Map() };

function join(map, ws, room) {
  if (ws.rooms.has(room)) return true;
  if (ws.rooms.size >= MAX_ROOMS_PER_CONN) {
    count('too_many_rooms');
    return false;
  }
  let members = map.get(room);
  if (!members) {
    members = new Set();
    map.set(room, members);
  }
  members.add(ws);
  ws.rooms.add(room);
  return true;
}

function leave(map, ws, room) {
  const members = map.get(room);
  if (members) {
    members.delete(ws);
    if (members.size === 0) map.delete(room);
  }
  ws.rooms.delete(room);
}

/** Bytes a server frame with a payload of `len` bytes takes on the wire. */
function frameBytes(len) {
  return len + (len < 126 ? 2 : len < 65536 ? 4 : 10);
}

/** Sends a text frame, counting its bytes: `ws.sentBytes - ws.bufferedAmount` is what was
 * written to the socket so far. */
function send(ws, data) {
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  ws.sentBytes += frameBytes(buf.length);
  ws.send(buf, { binary: false });
}

function written(ws) {
  return ws.sentBytes - ws.bufferedAmount;
}

/** The slow-consumer rule (see the top of the file) for a frame of `len` bytes to `peer`:
 * 'queue', 'drop' or 'kick'. */
function offer(peer, len, now) {
  if (peer.bufferedAmount + frameBytes(len) <= OUTBOUND_QUEUE_BYTES) return 'queue';
  if (peer.refusedSince === null || written(peer) > peer.writtenAtRefusal) {
    // The first refusal since something was written: the grace starts now.
    peer.refusedSince = now;
    peer.writtenAtRefusal = written(peer);
  }
  return now - peer.refusedSince >= SLOW_CONSUMER_GRACE_MS ? 'kick' : 'drop';
}

function kick(peer) {
  count('slow_consumer');
  totals.slowConsumerDisconnects += 1;
  error(peer, 'slow_consumer', 'outbound queue full and nothing written for the slow-consumer grace');
  peer.close(1008, 'slow consumer');
  setTimeout(() => peer.terminate(), CLOSE_TIMEOUT_MS).unref();
}

/** Sends `data` (encoded once) to every member of `room` but `from`. */
function fanOut(map, room, from, data) {
  const members = map.get(room);
  if (!members) return;
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  const now = Date.now();
  for (const peer of members) {
    if (peer === from || peer.readyState !== peer.OPEN) continue;
    switch (offer(peer, buf.length, now)) {
      case 'queue':
        send(peer, buf);
        break;
      case 'drop':
        count('queue_bytes');
        totals.dropsQueueBytes += 1;
        break;
      default:
        kick(peer);
    }
  }
}

function error(ws, code, reason) {
  count(`error_${code}`);
  send(ws, JSON.stringify({ t: 'error', code, reason }));
}

function onV1(ws, data) {
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return error(ws, 'bad_json', 'not JSON');
  }
  if (frame === null || typeof frame !== 'object') return error(ws, 'bad_json', 'not an object');
  switch (frame.t) {
    case 'join':
      if (!validRoom(frame.room)) return error(ws, 'bad_room', 'bad room name');
      if (!join(rooms.v1, ws, frame.room)) return error(ws, 'too_many_rooms', `at most ${MAX_ROOMS_PER_CONN}`);
      return send(ws, JSON.stringify({ t: 'joined', room: frame.room }));
    case 'leave':
      if (validRoom(frame.room)) leave(rooms.v1, ws, frame.room);
      return undefined;
    case 'msg':
      if (!validRoom(frame.room)) return error(ws, 'bad_room', 'bad room name');
      if (!ws.rooms.has(frame.room)) return error(ws, 'not_joined', 'join the room first');
      // Forward the frame as received: serialised once, by the sender.
      return fanOut(rooms.v1, frame.room, ws, data);
    case 'panic':
      // Uncaught on purpose: the measured outcome is what a plain Node server does with a bug.
      if (FAULT_INJECTION) throw new PoisonFrame(NAME);
      return error(ws, 'unknown_type', 'expected join, leave or msg');
    default:
      return error(ws, 'unknown_type', 'expected join, leave or msg');
  }
}

function onChat(ws, data) {
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    count('chat_bad_json');
    return undefined;
  }
  if (frame === null || typeof frame !== 'object' || !validRoom(frame.topic)) {
    count('chat_bad_frame');
    return undefined;
  }
  switch (frame.action) {
    case 'subscribe':
      if (join(rooms.chat, ws, frame.topic)) {
        send(ws, JSON.stringify({ event: 'subscribed', topic: frame.topic }));
      }
      return undefined;
    case 'unsubscribe':
      return leave(rooms.chat, ws, frame.topic);
    case 'publish':
      if (!ws.rooms.has(frame.topic)) {
        count('chat_not_subscribed');
        return undefined;
      }
      return fanOut(rooms.chat, frame.topic, ws,
        JSON.stringify({ event: 'message', topic: frame.topic, data: frame.data }));
    default:
      count('chat_bad_action');
      return undefined;
  }
}

wss.on('connection', (ws, req) => {
  const path = (req.url || '/').split('?')[0];
  ws.rooms = new Set();
  ws.sentBytes = 0;
  ws.refusedSince = null;
  ws.writtenAtRefusal = 0;
  ws.on('error', () => count('socket_error'));
  if (path === '/echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    return;
  }
  const [map, handle] = path === '/chat' ? [rooms.chat, onChat] : [rooms.v1, onV1];
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      count('binary');
      return ws.close(1003, 'text frames only');
    }
    return handle(ws, data);
  });
  ws.on('close', () => {
    for (const room of ws.rooms) leave(map, ws, room);
  });
});

stopOnSignal(NAME, () => {
  server.close();
  for (const ws of wss.clients) ws.close(1001, 'server stopping');
});

// A large accept backlog (Node's default is 511), as the reference servers have: connection
// storms otherwise overflow it (dropped SYNs, 1 s retransmit stalls).
server.listen({ port, host, backlog: 4096 }, () => announce(server, NAME, '/ws'));
