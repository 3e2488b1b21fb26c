// Socket.IO scaled out the way it is deployed on one machine: N worker processes under Node's
// `cluster` module sharing one listening port (the primary accepts and hands connections out
// round-robin), rooms spanning the workers through @socket.io/redis-adapter, and a primary that
// re-forks a worker that dies, as PM2 would. Each worker is socketio-room.js with the Redis URL in its environment.
//
// Usage: node socketio-cluster.js [--redis-url URL] [--workers N] [--listen HOST:PORT]
// (without --redis-url: the CHATBENCH_REDIS_URL environment variable)
//                                 [--fault-injection]
//
// stdout, line by line (chatbench's supervisor reads it):
//   <addr> ws://<addr>/socket.io/ arch=socketio-cluster pid=<primary> workers=N
//                                              once every worker listens (always the first line)
//   worker <id> started pid=<pid> restart=<k> restart_ms=<ms>
//                                              a worker listens (k = 0 at start)
//   worker <id> exited pid=<pid> status=<code|signal>
//   worker <id> gave_up restarts=<k>           re-forked too often (5 within 30 s): left down
//   worker <id> report pid=<pid> connections=<n> peak=<n> rooms=<n> peak_rooms=<n> published=<n>
//                                              its counts, when they change (every 0.5 s at most)
// Worker ids are 1..N and keep their id across re-forks. SIGTERM/SIGINT stops every worker
// (SIGTERM), then the primary; a primary that dies takes its workers with it (they exit when
// their IPC channel closes).
'use strict';

const cluster = require('cluster');
const net = require('net');
const path = require('path');
const { parseFlags } = require('./common');

const NAME = 'socketio-cluster';
/** Restart intensity: more than this many re-forks of one worker within the period: give up. */
const MAX_RESTARTS = 5;
const RESTART_PERIOD_MS = 30_000;
/** Grace for the workers to stop on SIGTERM before they are killed. */
const STOP_GRACE_MS = 3_000;

const { host, port, values } = parseFlags(process.argv, NAME, {
  workers: { type: 'string', default: '3' },
  'redis-url': { type: 'string' },
  'fault-injection': { type: 'boolean', default: false },
});
const workers = Number(values.workers);
if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
  console.error(`${NAME}: --workers ${JSON.stringify(values.workers)}: expected 1 to 256`);
  process.exit(2);
}
// The URL may carry a password: chatbench hands it over in the environment (CHATBENCH_REDIS_URL),
// which only this user can read, rather than on the command line, which every local user can.
const redisUrl = values['redis-url'] ?? process.env.CHATBENCH_REDIS_URL;
if (redisUrl === undefined) {
  console.error(`${NAME}: a Redis URL is required (the workers' rooms span them over Redis): --redis-url URL or CHATBENCH_REDIS_URL, e.g. redis://127.0.0.1:6379`);
  process.exit(2);
}

/** A free port on `host`, so that every worker (and every re-forked one) shares one handle. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ port: 0, host }, () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

function say(line) {
  process.stdout.write(`${line}\n`);
}

/** Slot id -> { worker, pid, restarts: [times], downSince, lastReport, gaveUp }. */
const slots = new Map();
let stopping = false;
let announced = false;

function fork(id, listen) {
  const slot = slots.get(id);
  // Workers inherit the environment, and with it CHATBENCH_REDIS_URL.
  process.env.CHATBENCH_REDIS_URL = redisUrl;
  const args = ['--listen', listen];
  if (values['fault-injection']) args.push('--fault-injection');
  cluster.setupPrimary({ exec: path.join(__dirname, 'socketio-room.js'), args });
  const worker = cluster.fork();
  worker.slot = id;
  slot.worker = worker;
  slot.pid = worker.process.pid;
  worker.on('message', (m) => {
    if (m === null || typeof m !== 'object' || m.t !== 'report') return;
    const line = `worker ${id} report pid=${slot.pid} connections=${m.connections} peak=${m.peak} rooms=${m.rooms} peak_rooms=${m.peakRooms} published=${m.published}`;
    if (line !== slot.lastReport && announced) say(line);
    slot.lastReport = line;
  });
  worker.on('listening', () => {
    slot.listening = true;
    if (!announced) {
      if ([...slots.values()].every((s) => s.listening)) {
        announced = true;
        const addr = `${host.includes(':') ? `[${host}]` : host}:${listen.slice(listen.lastIndexOf(':') + 1)}`;
        say(`${addr} ws://${addr}/socket.io/ arch=${NAME} pid=${process.pid} workers=${workers}`);
        for (const [i, s] of slots) say(`worker ${i} started pid=${s.pid} restart=0 restart_ms=0`);
      }
      return;
    }
    const ms = slot.downSince === null ? 0 : Date.now() - slot.downSince;
    slot.downSince = null;
    say(`worker ${id} started pid=${slot.pid} restart=${slot.restarts.length} restart_ms=${ms}`);
  });
}

function onExit(worker, code, signal) {
  const id = worker.slot;
  const slot = slots.get(id);
  if (slot === undefined || slot.worker !== worker) return;
  slot.listening = false;
  const status = signal || `exit ${code}`;
  if (!announced && !stopping) {
    console.error(`${NAME}: worker ${id} (pid ${slot.pid}) ended before listening (${status}); stopping`);
    stop(1);
    return;
  }
  say(`worker ${id} exited pid=${slot.pid} status=${status}`);
  if (stopping) return;
  const now = Date.now();
  slot.restarts = slot.restarts.filter((t) => now - t < RESTART_PERIOD_MS);
  if (slot.restarts.length >= MAX_RESTARTS) {
    say(`worker ${id} gave_up restarts=${slot.restarts.length}`);
    slot.gaveUp = true;
    return;
  }
  slot.restarts.push(now);
  slot.downSince = now;
  fork(id, slot.listen);
}

function stop(code) {
  if (stopping) return;
  stopping = true;
  const alive = [...slots.values()].filter((s) => s.worker && !s.worker.isDead());
  for (const s of alive) s.worker.process.kill('SIGTERM');
  const deadline = setTimeout(() => {
    for (const s of alive) if (!s.worker.isDead()) s.worker.process.kill('SIGKILL');
    process.exit(code);
  }, STOP_GRACE_MS);
  deadline.unref();
  const check = setInterval(() => {
    if (alive.every((s) => s.worker.isDead())) {
      clearInterval(check);
      process.exit(code);
    }
  }, 20);
}

async function main() {
  const chosen = port === 0 ? await freePort() : port;
  const listen = `${host.includes(':') ? `[${host}]` : host}:${chosen}`;
  cluster.on('exit', onExit);
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
  for (let id = 1; id <= workers; id++) {
    slots.set(id, { worker: null, pid: 0, restarts: [], downSince: null, lastReport: '', listen, listening: false, gaveUp: false });
    fork(id, listen);
  }
}

main().catch((e) => {
  console.error(`${NAME}: ${e.message}`);
  process.exit(1);
});
