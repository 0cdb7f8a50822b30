'use strict';
// Argument checks, with Noslate's messages where Noslate has them.

function checkPlatformEnvironmentVariables(envs) {
  if (!Array.isArray(envs)) {
    throw new TypeError('Platform environment variables must be an array of {key, value}.');
  }
  const out = [];
  for (const item of envs) {
    if (item === null || typeof item !== 'object' || typeof item.key !== 'string' || item.key === '') {
      throw new TypeError(`Platform environment variables' key must be a non-empty string. (Failed: ${JSON.stringify(item)})`);
    }
    const { key } = item;
    let { value } = item;
    if (key.startsWith('NOSLATED_') || key.startsWith('NOSLATE_')) {
      throw new Error(`Platform environment variables' key can't start with NOSLATED_ and NOSLATE_. (Failed: ${key})`);
    }
    if (value === null || value === undefined) value = '';
    if (typeof value !== 'string') {
      throw new Error(`Platform environment variables' value can't be out of string. (Failed: ${key}, ${value} (${typeof value}))`);
    }
    out.push({ key, value });
  }
  return out;
}

const MODES = new Set(['IMMEDIATELY', 'WAIT']);

function checkFunctionProfiles(profiles, mode) {
  if (!Array.isArray(profiles)) {
    throw new TypeError('Function profiles must be an array.');
  }
  profiles.forEach((profile, index) => {
    if (profile === null || typeof profile !== 'object' || Array.isArray(profile)) {
      throw new TypeError(`instance[${index}] is not of a type(s) object`);
    }
  });
  if (!MODES.has(mode)) {
    throw new TypeError(`mode must be IMMEDIATELY or WAIT, not ${JSON.stringify(mode)}`);
  }
}

function checkServiceProfiles(items) {
  if (!Array.isArray(items)) {
    throw new TypeError('Service profiles must be an array.');
  }
}

function checkName(name, what) {
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`${what} must be a non-empty string, not ${JSON.stringify(name)}`);
  }
}

// Data to invoke with: a Buffer or Uint8Array, a string, a Readable, or nothing.
function checkData(data) {
  if (data === undefined || data === null) return Buffer.alloc(0);
  if (typeof data === 'string') return Buffer.from(data);
  if (Buffer.isBuffer(data)) return data;
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (typeof data.pipe === 'function' && typeof data.on === 'function') return data;
  throw new TypeError('data must be a Buffer, a Uint8Array, a string or a Readable');
}

// Header-like metadata as the JSON text of [name, value] pairs, which is how it travels to the
// runtime. Noslate takes pairs; an object (Node's `req.headers`) is taken too, with array values
// as repeated headers, and so is a Map or a fetch Headers. This runs for every invocation a
// gateway forwards. A plain object of strings goes as the JSON object itself; otherwise the text
// is written here directly rather than through an array of pairs and one JSON.stringify, since
// most names and values need no escaping at all.
function pairsJson(value, what) {
  if (value === undefined || value === null) return '[]';
  let json = '';
  if (Array.isArray(value)) {
    if (value.every(isStringPair)) {
      // Already the wire's shape: one native JSON.stringify, unless a char must be escaped.
      const plain = JSON.stringify(value);
      if (Buffer.byteLength(plain) === plain.length) return plain;
    }
    for (const pair of value) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError(`${what} must be [name, value] pairs`);
      json += pairJson(pair[0], pair[1], what);
    }
  } else if (typeof value === 'object' && typeof value[Symbol.iterator] === 'function') {
    // A Map, or a fetch Headers: its entries are the pairs.
    for (const pair of value) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError(`${what} must be [name, value] pairs`);
      json += pairJson(pair[0], pair[1], what);
    }
  } else if (typeof value === 'object') {
    const plain = plainObjectJson(value);
    if (plain !== null) return plain;
    for (const name in value) {
      if (Object.hasOwn(value, name)) json += pairJson(name, value[name], what);
    }
  } else {
    throw new TypeError(`${what} must be an array of [name, value] pairs or an object`);
  }
  return json === '' ? '[]' : `[${json.slice(1)}]`;
}

// A [name, value] pair of strings with a name: what JSON.stringify writes as the wire expects.
const isStringPair = (pair) =>
  Array.isArray(pair) && pair.length === 2 && typeof pair[0] === 'string' && pair[0] !== '' && typeof pair[1] === 'string';

// In a plain object's JSON.stringify, a value that is not a string (a number is sent as its
// string, an array as repeated headers, null not at all) or an empty name (refused), each of
// which the careful path handles. Inside a string JSON escapes every `"`, so a `":` followed by
// anything but `"` is always a value of another kind, and `"":` an empty name (or, harmlessly,
// a name ending in a quote).
const NOT_STRING_OR_EMPTY_NAME = /"(?::[^"]|":)/;

// The headers of a plain object whose values are all strings, Node's `req.headers` among them,
// as the JSON object the runtime also takes: one native JSON.stringify and two quick scans,
// where building pairs took a gateway 40 % longer for the twenty-odd headers FC sends. null
// when the object needs the careful path: a value that is not a string, or a char past ASCII
// (its UTF-8 is longer than its chars), which must travel escaped.
function plainObjectJson(value) {
  const proto = Object.getPrototypeOf(value);
  if ((proto !== Object.prototype && proto !== null) || typeof value.toJSON === 'function') return null;
  let json;
  try {
    json = JSON.stringify(value);
  } catch {
    return null; // a BigInt value, or a cycle: the careful path says what it makes of them
  }
  return Buffer.byteLength(json) !== json.length || NOT_STRING_OR_EMPTY_NAME.test(json) ? null : json;
}

// One pair (or one per item of an array value) as `,[name,value]`; nothing for a value that is
// absent, a function or a symbol.
function pairJson(name, value, what) {
  if (typeof name !== 'string' || name === '') throw new TypeError(`${what}: every name must be a non-empty string`);
  if (typeof value === 'string') return `,[${quote(name)},${quote(value)}]`;
  // Left out, as JSON.stringify leaves them out of an object: nothing that reads as a header.
  if (value === undefined || value === null || typeof value === 'function' || typeof value === 'symbol') return '';
  if (!Array.isArray(value)) return `,[${quote(name)},${quote(String(value))}]`;
  let json = '';
  for (const one of value) json += `,[${quote(name)},${quote(String(one))}]`;
  return json;
}

// A JSON string whose every char past ASCII is escaped: a header value stays ASCII, and the
// runtime reads each char up to U+00FF as one byte (Node's own latin1 view of headers).
function quote(text) {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
      return JSON.stringify(text).replace(/[\u007f-\uffff]/g, escapeChar);
    }
  }
  return `"${text}"`;
}

const escapeChar = (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

function checkMetadata(metadata) {
  if (metadata === undefined || metadata === null) return { headersJson: '[]' };
  if (typeof metadata !== 'object') throw new TypeError('metadata must be an object');
  const { method, url, timeout, deadline, requestId } = metadata;
  if (method !== undefined && (typeof method !== 'string' || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(method))) {
    throw new TypeError(`metadata.method must be an HTTP method, not ${JSON.stringify(method)}`);
  }
  // The url travels as a header of the admin request: a CR or LF in it would end that header
  // and start another one of the caller's choosing.
  if (url !== undefined && (typeof url !== 'string' || !/^[\x21-\x7e\x80-\xff]+$/.test(url))) {
    throw new TypeError('metadata.url must be a non-empty string without spaces, control characters or characters past U+00FF');
  }
  for (const [key, v] of [['timeout', timeout], ['deadline', deadline]]) {
    // Whole enough to be written as digits: the runtime reads a whole number of milliseconds.
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0 && v <= Number.MAX_SAFE_INTEGER))) {
      throw new TypeError(`metadata.${key} must be a number of milliseconds`);
    }
  }
  if (requestId !== undefined && (typeof requestId !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(requestId))) {
    throw new TypeError('metadata.requestId must be 1 to 128 visible ASCII characters');
  }
  return {
    method,
    url,
    headersJson: pairsJson(metadata.headers, 'metadata.headers'),
    baggageJson: metadata.baggage === undefined ? undefined : pairsJson(metadata.baggage, 'metadata.baggage'),
    timeout,
    deadline,
    requestId,
  };
}

module.exports = {
  checkPlatformEnvironmentVariables,
  checkFunctionProfiles,
  checkServiceProfiles,
  checkName,
  checkData,
  checkMetadata,
};
