'use strict';
// invoke / invokeService: data of every kind, metadata, streaming both ways, errors before and
// after the head, cancellation, and the deadline that covers the head only.
// Functions: echo (tests/fixtures/echo), drip, bytes; service `front` -> echo.

const assert = require('assert/strict');
const crypto = require('crypto');
const { PassThrough, Readable } = require('stream');
const { NoslatedClient, run, text, waitFor, rejection } = require('./harness');

const agent = new NoslatedClient();

run([
  ['start', () => agent.start()],

  ['a Buffer, with method, url, headers, baggage and request id', async () => {
    const res = await agent.invoke('echo', Buffer.from('buf'), {
      method: 'PATCH',
      url: '/items/1?x=y',
      headers: [['Host', 'gw.example'], ['x-echo-status', '202'], ['x-a', '1'], ['x-a', '2']],
      baggage: [['tenant', 't9']],
      requestId: 'sdk-req-1',
    });
    assert.equal(res.status, 202);
    const headers = new Map(res.metadata.headers.map(([k, v]) => [k.toLowerCase(), v]));
    assert.equal(headers.get('x-echo'), 'yes');
    assert.deepEqual(res.metadata.headers.filter(([k]) => k === 'set-cookie').map(([, v]) => v), ['a=1', 'b=2']);
    assert.ok(!headers.has('transfer-encoding') && !headers.has('connection'));
    const seen = JSON.parse(await text(res));
    assert.equal(seen.method, 'PATCH');
    assert.equal(seen.url, '/items/1?x=y');
    assert.deepEqual(seen.headers, [['Host', 'gw.example'], ['x-echo-status', '202'], ['x-a', '1'], ['x-a', '2']]);
    assert.deepEqual(seen.baggage, { tenant: 't9' });
    assert.equal(seen.ctx.requestId, 'sdk-req-1');
    assert.equal(seen.body, 'buf');
  }],

  ['a string, headers as an object, and an event without metadata', async () => {
    const res = await agent.invoke('echo', 'str', { url: '/', headers: { 'x-b': ['1', '2'], 'x-c': 3 } });
    const seen = JSON.parse(await text(res));
    assert.deepEqual(seen.headers, [['x-b', '1'], ['x-b', '2'], ['x-c', '3']]);
    assert.equal(seen.body, 'str');
    const fromMap = await agent.invoke('echo', 'map', { url: '/', headers: new Map([['x-m', '1']]) });
    assert.deepEqual(JSON.parse(await text(fromMap)).headers, [['x-m', '1']]);
    const fromHeaders = await agent.invoke('echo', 'h', { url: '/', headers: new Headers([['x-h', '2']]) });
    assert.deepEqual(JSON.parse(await text(fromHeaders)).headers, [['x-h', '2']]);
    // A timeout past what a Node.js timer holds is the runtime's to keep, not a timer that
    // fires at once.
    const far = await agent.invoke('echo', 'far', { url: '/', timeout: 2 ** 40 });
    assert.equal(JSON.parse(await text(far)).body, 'far');
    const event = await agent.invoke('echo', Buffer.from('ev'));
    assert.equal(event.status, 200);
    // FC's own signal on the runtime's answer is not one of the function's headers.
    assert.ok(!event.metadata.headers.some(([name]) => name.toLowerCase() === 'x-fc-status'), JSON.stringify(event.metadata.headers));
    assert.equal(JSON.parse(await text(event)).body, 'ev');
  }],

  ['without a requestId, a forwarded x-fc-request-id names the request, as on the FC port', async () => {
    const ctxOf = async (metadata) => JSON.parse(await text(await agent.invoke('echo', '', metadata))).ctx;
    assert.equal((await ctxOf({ url: '/', headers: { 'x-fc-request-id': 'fc-req-7' } })).requestId, 'fc-req-7');
    assert.equal((await ctxOf({ headers: [['X-Fc-Request-Id', 'fc-req-8']] })).requestId, 'fc-req-8');
    const both = await ctxOf({ url: '/', requestId: 'own-1', headers: { 'x-fc-request-id': 'fc-req-9' } });
    assert.equal(both.requestId, 'own-1');
    // An empty one is no id; the runtime makes one, as for a call that forwards none.
    const none = await ctxOf({ url: '/', headers: { 'x-fc-request-id': '' } });
    assert.match(none.requestId, /^[0-9a-f-]{36}$/);
  }],

  ['headers arrive as the same pairs whichever way the SDK encodes them', async () => {
    const seenHeaders = async (headers) => JSON.parse(await text(await agent.invoke('echo', '', { url: '/', headers }))).headers;
    // All strings: sent as one JSON.stringify. Escapes, empty values and order survive.
    const plain = { 'x-q': 'say "hi"\\', 'x-tab': 'a\tb', 'x-empty': '', 'x-b': '2', 'x-a': '1' };
    const expected = Object.entries(plain);
    assert.deepEqual(await seenHeaders(plain), expected);
    assert.deepEqual(await seenHeaders(Object.assign(Object.create(null), plain)), expected);
    // Pairs of strings go as one JSON.stringify too; others take the careful path.
    assert.deepEqual(await seenHeaders(expected), expected);
    assert.deepEqual(await seenHeaders([['x-l', 'caf\u00e9'], ['x-n', 7], ['x-null', null]]), [['x-l', 'caf\u00e9'], ['x-n', '7']]);
    // A Node.js request's own headers, as a gateway forwards them.
    const incoming = await new Promise((resolve, reject) => {
      const server = require('http').createServer((req, res) => {
        resolve(req.headers);
        res.end();
        server.close();
      });
      server.listen(0, '127.0.0.1', () => {
        const req = require('http').get({ port: server.address().port, headers: { 'X-Mixed-Case': 'v', 'x-fc-request-id': 'r1' } });
        req.on('response', (res) => res.resume());
        req.on('error', reject);
      });
    });
    assert.deepEqual(await seenHeaders(incoming), Object.entries(incoming));
    // Anything else takes the careful path and means the same as before: past ASCII escaped,
    // numbers and bigints as strings, arrays repeated; null, undefined, functions and symbols
    // left out.
    const mixed = { 'x-latin1': 'caf\u00e9', 'x-n': 7, 'x-big': 10n, 'x-r': ['1', '2'], 'x-null': null, 'x-u': undefined };
    assert.deepEqual(await seenHeaders(mixed), [['x-latin1', 'caf\u00e9'], ['x-n', '7'], ['x-big', '10'], ['x-r', '1'], ['x-r', '2']]);
    assert.deepEqual(await seenHeaders({ 'x-del': 'a\x7fb', 'x-c1': '\u0085' }), [['x-del', 'a\x7fb'], ['x-c1', '\u0085']]);
    class Custom { constructor() { this['x-k'] = 'v'; } toJSON() { return { other: 'x' }; } }
    assert.deepEqual(await seenHeaders(new Custom()), [['x-k', 'v']]);
    assert.deepEqual(await seenHeaders({ 'x-own': 'v', toJSON: () => ({}), 'x-sym': Symbol('s') }), [['x-own', 'v']]);
    assert.match((await rejection(agent.invoke('echo', 'x', { url: '/', headers: { '': 'v' } }))).message, /non-empty string/);
    assert.match((await rejection(agent.invoke('echo', 'x', { url: '/', headers: { a: '1', '': 'v' } }))).message, /non-empty string/);
    assert.deepEqual(await seenHeaders({}), []);
  }],

  ['a Readable of strings or Uint8Arrays is sent as bytes; one of anything else is refused', async () => {
    let res = await agent.invoke('echo', Readable.from(['h\u00e9', 'llo']), { url: '/' });
    assert.equal(JSON.parse(await text(res)).body, 'h\u00e9llo');
    res = await agent.invoke('echo', Readable.from([new Uint8Array([104, 105])]), { url: '/' });
    assert.equal(JSON.parse(await text(res)).body, 'hi');
    const err = await rejection(agent.invoke('echo', Readable.from([1, 2]), { url: '/' }));
    assert.match(err.message, /chunk of type number/);
    res = await agent.invoke('echo', 'after', { url: '/' });
    assert.equal(JSON.parse(await text(res)).body, 'after');
  }],

  ['a Readable already read, destroyed, or destroyed on the way gets an answer', async () => {
    const drained = Readable.from(['x']);
    for await (const _ of drained);
    const res = await agent.invoke('echo', drained, { url: '/' });
    assert.equal(JSON.parse(await text(res)).body, '');
    drained.headers = { 'content-length': '1' };
    assert.match((await rejection(agent.invoke('echo', drained, { url: '/' }))).message, /already been read/);
    const gone = new PassThrough();
    gone.destroy();
    assert.match((await rejection(agent.invoke('echo', gone, { url: '/' }))).message, /CANCELLED/);
    const cut = new PassThrough();
    const pending = agent.invoke('bytes', cut, { url: '/', headers: [['x-bytes-mode', 'sink']] });
    cut.write('partial');
    setTimeout(() => cut.destroy(), 50);
    const err = await rejection(pending);
    assert.match(err.message, /CANCELLED/);
    assert.match(err.cause.message, /destroyed before its end/);
  }],

  ['a Readable of 16 MiB streamed through and back', async () => {
    const size = 16 << 20;
    const piece = crypto.randomBytes(1 << 16);
    const sent = crypto.createHash('sha256');
    let left = size;
    const source = new Readable({
      read() {
        if (left === 0) { this.push(null); return; }
        const n = Math.min(left, piece.length);
        left -= n;
        sent.update(piece.subarray(0, n));
        this.push(piece.subarray(0, n));
      },
    });
    const res = await agent.invoke('bytes', source, { url: '/', headers: [['x-bytes-mode', 'pipe']] });
    const got = crypto.createHash('sha256');
    let received = 0;
    for await (const chunk of res) { got.update(chunk); received += chunk.length; }
    assert.equal(received, size);
    assert.equal(got.digest('hex'), sent.digest('hex'));
  }],

  ['a response that starts before the request ends (duplex)', async () => {
    const input = new PassThrough();
    input.write('ping-1\n');
    const res = await agent.invoke('bytes', input, { url: '/', headers: [['x-bytes-mode', 'pipe']] });
    const it = res[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.value.toString(), 'ping-1\n');
    input.end('ping-2\n');
    let rest = '';
    for (let r = await it.next(); !r.done; r = await it.next()) rest += r.value;
    assert.equal(rest, 'ping-2\n');
  }],

  ['a streamed body with nothing at hand does not hold its head back', async () => {
    // The SDK holds a head only for the body bytes its tick brings: a body that comes later,
    // here only after the answer, must not keep the invocation from starting.
    const input = new PassThrough();
    const res = await agent.invoke('drip', input, {
      url: '/', timeout: 5000, headers: [['x-drip-pieces', '2'], ['x-drip-every', '10']],
    });
    assert.equal(res.status, 200);
    assert.equal(await text(res), 'drip\ndrip\n');
    input.end('late');
  }],

  ['invokeService picks the service function', async () => {
    const res = await agent.invokeService('front', 'via service', { url: '/s' });
    assert.equal(JSON.parse(await text(res)).body, 'via service');
    const err = await rejection(agent.invokeService('nosuch', 'x'));
    assert.equal(err.name, 'ServiceNotFound');
    assert.equal(err.code, 5);
  }],

  ['errors before the head reject with name, message and code', async () => {
    const missing = await rejection(agent.invoke('nosuch', 'x'));
    assert.equal(missing.name, 'FunctionNotFound');
    assert.equal(missing.code, 5);
    assert.match(missing.message, /nosuch/);
    const thrown = await rejection(agent.invoke('drip', '', { url: '/', headers: [['x-drip-throw', '1']] }));
    assert.equal(thrown.name, 'NoslatedError');
    assert.equal(thrown.code, 1);
    assert.equal(thrown.errorType, 'TypeError');
    assert.match(thrown.message, /CanonicalCode::INTERNAL_ERROR.*drip was asked to throw/);
    assert.match(thrown.peerStack, /TypeError: drip was asked to throw/);
    const late = await rejection(agent.invoke('drip', '', {
      url: '/', timeout: 300, headers: [['x-drip-head-delay', '5000']],
    }));
    assert.equal(late.name, 'NoslatedError');
    assert.equal(late.code, 2, 'TIMEOUT');
    assert.equal(late.errorType, 'FunctionTimeout');
  }],

  ['the deadline covers the head, not the stream', async () => {
    const res = await agent.invoke('drip', '', {
      url: '/', deadline: Date.now() + 500, headers: [['x-drip-pieces', '8'], ['x-drip-every', '200']],
    });
    assert.equal(await text(res), 'drip\n'.repeat(8));
  }],

  ['destroying the response cancels the invocation', async () => {
    const cancelled = async () => {
      const count = await agent.invoke('drip', '', { url: '/', headers: [['x-drip-count', '1']] });
      return JSON.parse(await text(count)).cancelled;
    };
    const before = await cancelled();
    const res = await agent.invoke('drip', '', { url: '/', headers: [['x-drip-pieces', '1000'], ['x-drip-every', '20']] });
    await new Promise((resolve) => res.once('data', resolve));
    res.destroy();
    await waitFor('the worker saw its stream cancelled', async () => (await cancelled()) === before + 1);
  }],

  ['a request body that fails cancels the call', async () => {
    const input = new PassThrough();
    const pending = agent.invoke('bytes', input, { url: '/', headers: [['x-bytes-mode', 'sink']] });
    input.write('partial');
    setTimeout(() => input.destroy(new Error('the upstream client went away')), 50);
    const err = await rejection(pending);
    assert.match(err.message, /CANCELLED: Cancelled on client/);
  }],

  ['bad arguments are rejected without a call', async () => {
    assert.match((await rejection(agent.invoke('', 'x'))).message, /function name must be a non-empty string/);
    assert.match((await rejection(agent.invoke('echo', 42))).message, /data must be a Buffer/);
    assert.match((await rejection(agent.invoke('echo', 'x', { method: 'G ET' }))).message, /metadata.method/);
    assert.match((await rejection(agent.invoke('echo', 'x', { timeout: -1 }))).message, /metadata.timeout/);
    assert.match((await rejection(agent.invoke('echo', 'x', { timeout: 1e300 }))).message, /metadata.timeout/);
    assert.match((await rejection(agent.invoke('echo', 'x', { deadline: NaN }))).message, /metadata.deadline/);
    // A url that would end its header and add one of its own.
    assert.match((await rejection(agent.invoke('echo', 'x', { url: '/a\r\nx-noslate-deadline: 1' }))).message, /metadata.url/);
    assert.match((await rejection(agent.invoke('echo', 'x', { url: '/a b' }))).message, /metadata.url/);
    assert.match((await rejection(agent.invoke('echo', 'x', { headers: [['a']] }))).message, /pairs/);
    assert.match((await rejection(agent.invoke('echo', 'x', { requestId: 'a b' }))).message, /requestId/);
  }],

  ['the runtime refuses what only it can check, with a name', async () => {
    const err = await rejection(agent.invoke('echo', 'x', { url: '/', headers: [['x-a', '\u0100']] }));
    assert.equal(err.name, 'InvalidInvokeMetadata');
    assert.match(err.message, /x-noslate-headers/);
    // Refused before routing (a head over http.maxHeaderBytes): an error too, not an answer.
    const big = await rejection(agent.invoke('echo', 'x', { url: `/${'a'.repeat(64 * 1024)}` }));
    assert.equal(big.name, 'RequestHeaderFieldsTooLarge');
  }],

  ['64 invocations at once all answer', async () => {
    const answers = await Promise.all(Array.from({ length: 64 }, (_, i) =>
      agent.invoke('echo', `n${i}`, { url: `/${i}` }).then(text)));
    answers.forEach((answer, i) => assert.equal(JSON.parse(answer).body, `n${i}`));
  }],

  ['after close, invoke says there is no data plane', async () => {
    await agent.close();
    const err = await rejection(agent.invoke('echo', 'x'));
    assert.equal(err.message, 'No activated data plane.');
  }],
]);
