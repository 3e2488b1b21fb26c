// A chat room server on Socket.IO (v4 server, protocol v5), written the way that ecosystem
// would: rooms are Socket.IO's own (`socket.join`), a message is broadcast to the room's other
// members with `socket.to(room).emit`. chatbench measures it with protocol = "socketio".
//
//   emit("join", room, ack)     joins the room, then calls ack("ok")
//   emit("leave", room)         leaves it
//   emit("message", {room, …})  broadcast as "message" to the room's other members
//
// WebSocket transport only (no long-polling), so every client is one WebSocket.
// Usage: node socketio-room.js [--listen HOST:PORT]   (prints its address on stdout)
// Limits: 64 KiB messages (Socket.IO's maxHttpBufferSize), 16 rooms per connection (counted
// on stderr at exit). A slow recipient's outbound buffer is Socket.IO's own and unbounded, as in
// a stock Socket.IO application: that is part of what is measured (chatbench's own servers bound
// it).
'use strict';

const http = require('http');
const { Server } = require('socket.io');
const { listenAddress, announce, count, stopOnSignal, validRoom } = require('./common');

const NAME = 'socketio';
const MAX_ROOMS_PER_CONN = 16;

const { host, port } = listenAddress(process.argv, 'socketio-room');
const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  maxHttpBufferSize: 64 * 1024,
  perMessageDeflate: false,
});

io.on('connection', (socket) => {
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
    if (msg === null || typeof msg !== 'object' || !validRoom(msg.room)) {
      count('bad_message');
      return;
    }
    if (!socket.rooms.has(msg.room)) {
      count('not_joined');
      return;
    }
    socket.to(msg.room).emit('message', msg);
  });
});

stopOnSignal(NAME, () => {
  io.close();
});

// A large accept backlog (Node's default is 511), as the reference servers have.
server.listen({ port, host, backlog: 4096 }, () => announce(server, NAME, '/socket.io/'));
