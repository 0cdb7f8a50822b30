'use strict';
// The noslate SDK: `require(process.env.NOSLATE_PATH).NoslatedClient`, as with Noslate.

const { NoslatedClient } = require('./lib/client');
const { CanonicalCode, NoslatedError } = require('./lib/errors');

module.exports = { NoslatedClient, CanonicalCode, NoslatedError };
