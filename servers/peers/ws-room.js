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
// Usage: node ws-room.js [--listen HOST:PORT] [--fault-injection]   (prints its address on stdout)
// With --fault-injection, a v1 frame {"t":"panic"} throws from the message handler, uncaught, as
// a bug in a plain Node server would: the whole process dies (docs/protocol.md, "Fault
// injection"). Without it, "panic" is an unknown_type error like any other.
// Limits (counted on stderr at exit): 64 KiB messages (larger: close 1009), 16 rooms per
// connection, and a slow-consumer policy: a recipient with more than 1 MiB unsent is skipped
// (drop newest).
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');
const { parseFlags, PoisonFrame, announce, count, stopOnSignal, validRoom } = require('./common');

const NAME = 'node-ws';
const MAX_PAYLOAD = 64 * 1024;
const MAX_ROOMS_PER_CONN = 16;
const MAX_BUFFERED = 1024 * 1024;

const { host, port, values } = parseFlags(process.argv, 'ws-room', {
  'fault-injection': { type: 'boolean', default: false },
});
const FAULT_INJECTION = values['fault-injection'];
const server = http.createServer((req, res) => {
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

/** Sends `data` (encoded once) to every member of `room` but `from`. */
function fanOut(map, room, from, data) {
  const members = map.get(room);
  if (!members) return;
  for (const peer of members) {
    if (peer === from || peer.readyState !== peer.OPEN) continue;
    if (peer.bufferedAmount > MAX_BUFFERED) {
      count('dropped_slow_consumer');
      continue;
    }
    peer.send(data, { binary: false });
  }
}

function error(ws, code, reason) {
  count(`error_${code}`);
  ws.send(JSON.stringify({ t: 'error', code, reason }));
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
      return ws.send(JSON.stringify({ t: 'joined', room: frame.room }));
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
        ws.send(JSON.stringify({ event: 'subscribed', topic: frame.topic }));
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
