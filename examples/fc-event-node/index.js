'use strict';
// FC's Node.js event handler (`handlerStyle: "fc-event"`): `event` is the request body as a Buffer
// and the result is the 200 body (a string or Buffer as is, anything else as JSON). An async
// handler returns its result; a plain one calls `callback(err, result)` instead.
let coldStart = true;

exports.initializer = (context, callback) => {
  context.logger.info('initializing');
  callback(null, '');
};

exports.handler = async (event, context) => {
  const wasCold = coldStart;
  coldStart = false;
  let input;
  try {
    input = JSON.parse(event.toString() || '{}');
  } catch {
    input = event.toString();
  }
  context.logger.info('event of', event.length, 'bytes');
  return { input, requestId: context.requestId, function: context.function.name, wasCold };
};
