// A probe like Butler's src/docker-healthcheck.js: GET /health with a 2 s timeout,
// exit 0 on HTTP 200, else 1. Usage: node probe.js URL
'use strict';
const http = require('http');

const url = process.argv[2];
const req = http.get(url, { timeout: 2000 }, (res) => {
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on('timeout', () => {
  req.destroy();
  process.exit(1);
});
req.on('error', () => process.exit(1));
