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

// Header-like metadata as [name, value] pairs: Noslate takes pairs; an object (Node's
// `req.headers`) is taken too, with array values as repeated headers.
function toPairs(value, what) {
  if (value === undefined || value === null) return [];
  const pairs = [];
  const push = (k, v) => {
    if (typeof k !== 'string' || k === '') throw new TypeError(`${what}: every name must be a non-empty string`);
    if (Array.isArray(v)) {
      for (const one of v) pairs.push([k, String(one)]);
    } else if (v !== undefined && v !== null) {
      pairs.push([k, String(v)]);
    }
  };
  if (Array.isArray(value)) {
    for (const pair of value) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError(`${what} must be [name, value] pairs`);
      push(pair[0], pair[1]);
    }
  } else if (typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) push(k, v);
  } else {
    throw new TypeError(`${what} must be an array of [name, value] pairs or an object`);
  }
  return pairs;
}

function checkMetadata(metadata) {
  if (metadata === undefined || metadata === null) return { headers: [] };
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
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) {
      throw new TypeError(`metadata.${key} must be a number of milliseconds`);
    }
  }
  if (requestId !== undefined && (typeof requestId !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(requestId))) {
    throw new TypeError('metadata.requestId must be 1 to 128 visible ASCII characters');
  }
  return {
    method,
    url,
    headers: toPairs(metadata.headers, 'metadata.headers'),
    baggage: metadata.baggage === undefined ? undefined : toPairs(metadata.baggage, 'metadata.baggage'),
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
