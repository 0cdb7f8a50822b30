'use strict';
// Always fails, to show the error path. A handler that throws (or rejects) before its response
// head went out becomes a function error: 404 with `x-fc-status: 404` and a JSON body
// {errorMessage, errorType, stackTrace}, where errorType is the error's name.
class DemoError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DemoError';
  }
}

exports.handler = async (ctx) => {
  ctx.logger.error('about to fail on purpose');
  throw new DemoError('this function always fails');
};
