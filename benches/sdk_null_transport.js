'use strict';
// For the `g` rows of benches/e2e: replaces the SDK's connections to the runtime with ones in
// the gateway's own process, which answer each invocation with a fixed small response on the
// next turn of the event loop. Every line of the SDK and of the gateway still runs; only the
// admin socket's I/O (and the runtime and worker behind it) are gone. What such a gateway
// serves is the most that any transport between the SDK and the runtime could give it.
//
// It reaches into the SDK's pool (`lib/wire.js`): a bench instrument, not an interface.

const ANSWER = Buffer.from(
  'HTTP/1.1 200 OK\r\nx-fc-request-id: 0f0e0d0c-0b0a-0908-0706-050403020100\r\n'
  + 'content-type: text/plain\r\ncontent-length: 5\r\n\r\nhello',
);

// Takes what the SDK writes and answers once per write: the SDK writes an invocation whose
// body has all arrived in one call, and the bench's requests are such.
class InProcessSocket {
  constructor(connection) {
    this.connection = connection;
    this.destroyed = false;
  }

  write() {
    setImmediate(() => {
      const { exchange } = this.connection;
      if (exchange) exchange.onData(ANSWER);
    });
    return true;
  }

  cork() {}

  uncork() {}

  resume() {}

  pause() {}

  destroy() {
    this.destroyed = true;
  }
}

function install(sdkPath) {
  const { Pool } = require(`${sdkPath}/lib/wire.js`);
  Pool.prototype.connect = function connect(exchange) {
    this.open += 1;
    const connection = { exchange: null, connecting: null };
    connection.socket = new InProcessSocket(connection);
    queueMicrotask(() => this.begin(connection, exchange, false));
  };
}

module.exports = { install };
