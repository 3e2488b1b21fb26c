// Shared by the peer servers: the command line (--listen and each server's flags), the address
// line chatbench reads, the fault-injection error, counted limits, and a graceful stop on
// SIGTERM/SIGINT.
'use strict';

const { parseArgs } = require('util');

/**
 * Parses the command line: `--listen HOST:PORT` (default 127.0.0.1:0) and the server's own
 * `options` (a `util.parseArgs` options table, e.g. `{ 'fault-injection': { type: 'boolean' } }`).
 * Exits 2 with a usage line when anything is unknown or malformed.
 * Returns `{ host, port, values }`.
 */
function parseFlags(argv, name, options = {}) {
  const usage = `usage: node ${name}.js [--listen HOST:PORT]${Object.entries(options)
    .map(([k, o]) => ` [--${k}${o.type === 'string' ? ' VALUE' : ''}]`)
    .join('')}`;
  let values;
  try {
    ({ values } = parseArgs({
      args: argv.slice(2),
      options: { listen: { type: 'string', default: '127.0.0.1:0' }, ...options },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`${name}: ${e.message}; ${usage}`);
    process.exit(2);
  }
  const listen = values.listen;
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`${name}: --listen ${JSON.stringify(listen)}: expected HOST:PORT, e.g. 127.0.0.1:0`);
    process.exit(2);
  }
  return { host, port, values };
}

/** The fault-injection error: thrown, uncaught, from a message handler (`--fault-injection`). */
class PoisonFrame extends Error {
  constructor(server) {
    super(`${server}: fault injection: {"t":"panic"} received; throwing from the message handler`);
    this.name = 'PoisonFrame';
  }
}

/** The first stdout line, like `chatbench serve`: `<addr> ws://<addr><path> arch=<name> pid=<pid>`. */
function announce(server, name, path) {
  const a = server.address();
  const addr = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  process.stdout.write(`${addr} ws://${addr}${path} arch=${name} pid=${process.pid}\n`);
}

/** Counters of what a limit refused or dropped, printed to stderr at exit. */
const counted = {};
function count(what) {
  counted[what] = (counted[what] || 0) + 1;
}

/** On SIGTERM/SIGINT: run `close` (close every client with 1001), then exit 0. */
function stopOnSignal(name, close) {
  const stop = (sig) => {
    close();
    if (Object.keys(counted).length > 0) {
      console.error(`${name}: ${sig}: stopping; counted ${JSON.stringify(counted)}`);
    }
    // Give the close frames a moment, then leave whatever is still open.
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/**
 * Parses a duration as the reference servers' flags take it (humantime's common forms): one or
 * more `<integer><unit>` with unit `ms`, `s`, `m` or `h` (`300ms`, `10s`, `1m30s`); `0` alone is
 * zero. Returns milliseconds, or `null` when `v` is not such a duration.
 */
function parseDurationMs(v) {
  if (v === '0') return 0;
  if (typeof v !== 'string' || !/^(\d{1,12}(ms|s|m|h))+$/.test(v)) return null;
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let ms = 0;
  for (const [, n, u] of v.matchAll(/(\d{1,12})(ms|s|m|h)/g)) ms += Number(n) * units[u];
  return ms;
}

/** Room names: 1..64 characters of letters, digits, '.', '_', ':' and '-'. */
function validRoom(room) {
  return typeof room === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(room);
}

module.exports = {
  parseFlags, PoisonFrame, announce, count, counted, stopOnSignal, validRoom, parseDurationMs,
};
