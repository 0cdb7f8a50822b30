'use strict';
// The smallest function, and the one the benchmarks call: read the request body (and throw it
// away, which returns the upload's flow-control credit to the runtime), then answer 200 "hello".
exports.handler = (ctx, req, res) => {
  req.resume();
  req.on('end', () => res.end('hello'));
};
