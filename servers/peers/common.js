// Shared by the peer servers: the --listen flag, the address line chatbench reads, counted
// limits, and a graceful stop on SIGTERM/SIGINT.
'use strict';

/** Parses `--listen HOST:PORT` (default 127.0.0.1:0). Exits 2 with a usage line when bad. */
function listenAddress(argv, name) {
  let listen = '127.0.0.1:0';
  for (let i = 2; i < argv.length; i++) {
    if (argv[i] === '--listen' && i + 1 < argv.length) {
      listen = argv[++i];
    } else if (argv[i].startsWith('--listen=')) {
      listen = argv[i].slice('--listen='.length);
    } else {
      console.error(`${name}: unknown argument ${JSON.stringify(argv[i])}; usage: node ${name}.js [--listen HOST:PORT]`);
      process.exit(2);
    }
  }
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`${name}: --listen ${JSON.stringify(listen)}: expected HOST:PORT, e.g. 127.0.0.1:0`);
    process.exit(2);
  }
  return { host, port };
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

/** Room names: 1..64 characters of letters, digits, '.', '_', ':' and '-'. */
function validRoom(room) {
  return typeof room === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(room);
}

module.exports = { listenAddress, announce, count, stopOnSignal, validRoom };
