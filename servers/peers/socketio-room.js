// A chat room server on Socket.IO (v4 server, protocol v5), written the way that ecosystem
// would: rooms are Socket.IO's own (`socket.join`), a message is broadcast to the room's other
// members with `socket.to(room).emit`. chatbench measures it with protocol = "socketio".
//
//   emit("join", room, ack)     joins the room, then calls ack("ok")
//   emit("leave", room)         leaves it
//   emit("message", {room, …})  broadcast as "message" to the room's other members
//
// WebSocket transport only (no long-polling), so every client is one WebSocket.
// Usage: node socketio-room.js [--listen HOST:PORT] [--fault-injection] [--redis-url URL]
// (prints its address on stdout, unless it is a worker of socketio-cluster.js).
//
// --fault-injection: a "message" whose payload is {"t":"panic"} throws from the event handler,
//   uncaught, as a bug in a plain Node server would: the process dies (docs/protocol.md).
// --redis-url: rooms span every server on that Redis through @socket.io/redis-adapter (the
//   Socket.IO scale-out; socketio-cluster.js runs N of these as `cluster` workers). As a worker
//   it reports its counts to the primary every half second.
//
// Limits: 64 KiB messages (Socket.IO's maxHttpBufferSize), 16 rooms per connection (counted
// on stderr at exit). A slow recipient's outbound buffer is Socket.IO's own and unbounded, as in
// a stock Socket.IO application: that is part of what is measured (chatbench's own servers bound
// it).
'use strict';

const cluster = require('cluster');
const http = require('http');
const { Server } = require('socket.io');
const { parseFlags, PoisonFrame, announce, count, stopOnSignal, validRoom } = require('./common');

const NAME = cluster.isWorker ? 'socketio-cluster' : 'socketio';
const MAX_ROOMS_PER_CONN = 16;
/** How often a cluster worker reports its counts to the primary. */
const REPORT_MS = 500;

const { host, port, values } = parseFlags(process.argv, 'socketio-room', {
  'fault-injection': { type: 'boolean', default: false },
  'redis-url': { type: 'string' },
});
const FAULT_INJECTION = values['fault-injection'];
const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  maxHttpBufferSize: 64 * 1024,
  perMessageDeflate: false,
});

/** What a cluster worker reports: connections now and at the peak, rooms with local members
 * (now and at the peak), and messages its own clients published. */
const stats = { connections: 0, peak: 0, rooms: 0, peakRooms: 0, published: 0 };

io.on('connection', (socket) => {
  stats.connections += 1;
  stats.peak = Math.max(stats.peak, stats.connections);
  socket.on('disconnect', () => {
    stats.connections -= 1;
  });
  socket.on('join', (room, ack) => {
    if (!validRoom(room)) {
      count('bad_room');
      if (typeof ack === 'function') ack('bad_room');
      return;
    }
    // socket.rooms holds the socket's own id too.
    if (!socket.rooms.has(room) && socket.rooms.size > MAX_ROOMS_PER_CONN) {
      count('too_many_rooms');
      if (typeof ack === 'function') ack('too_many_rooms');
      return;
    }
    socket.join(room);
    if (typeof ack === 'function') ack('ok');
  });
  socket.on('leave', (room) => {
    if (validRoom(room)) socket.leave(room);
  });
  socket.on('message', (msg) => {
    if (FAULT_INJECTION && msg !== null && typeof msg === 'object' && msg.t === 'panic') {
      // Uncaught on purpose (Socket.IO runs this handler from process.nextTick): the measured
      // outcome is what a plain Node server does with a bug.
      throw new PoisonFrame(NAME);
    }
    if (msg === null || typeof msg !== 'object' || !validRoom(msg.room)) {
      count('bad_message');
      return;
    }
    if (!socket.rooms.has(msg.room)) {
      count('not_joined');
      return;
    }
    stats.published += 1;
    socket.to(msg.room).emit('message', msg);
  });
});

/** Rooms with at least one member on this process (Socket.IO's room map also holds one room per
 * socket, named by its id). */
function localRooms() {
  const adapter = io.of('/').adapter;
  let n = 0;
  for (const room of adapter.rooms.keys()) {
    if (!adapter.sids.has(room)) n += 1;
  }
  return n;
}

/** Connects the Redis adapter: a publishing and a subscribing client, as its README does. */
async function useRedis(url) {
  const { createClient } = require('redis');
  const { createAdapter } = require('@socket.io/redis-adapter');
  const pub = createClient({ url });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) {
    c.on('error', (e) => {
      count('redis_error');
      console.error(`${NAME}: redis ${redacted(url)}: ${e.message}`);
    });
  }
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

/** The URL without its password, for messages. */
function redacted(url) {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

async function main() {
  // --redis-url, or CHATBENCH_REDIS_URL (how chatbench hands over a URL with a password).
  const redisUrl = values['redis-url'] ?? process.env.CHATBENCH_REDIS_URL;
  if (redisUrl !== undefined) {
    try {
      // The clients stay open to the end: the process exit closes them (a disconnect would
      // reject the adapter's pending subscriptions).
      await useRedis(redisUrl);
    } catch (e) {
      console.error(`${NAME}: cannot connect to Redis at ${redacted(redisUrl)}: ${e.message}`);
      process.exit(1);
    }
  }
  stopOnSignal(NAME, () => {
    io.close();
  });
  if (cluster.isWorker) {
    setInterval(() => {
      stats.rooms = localRooms();
      stats.peakRooms = Math.max(stats.peakRooms, stats.rooms);
      if (process.connected) process.send({ t: 'report', ...stats });
    }, REPORT_MS).unref();
  }
  // A large accept backlog (Node's default is 511), as the reference servers have. A cluster
  // worker's listen is the primary's shared handle; the primary announces the address.
  server.listen({ port, host, backlog: 4096 }, () => {
    if (!cluster.isWorker) announce(server, NAME, '/socket.io/');
  });
}

main();
