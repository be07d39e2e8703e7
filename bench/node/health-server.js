// Lower bound for Butler's own /health: Node's built-in http module answering with the body
// fastify-healthcheck returns. Fastify only adds routing, hooks and serialization on top.
// Usage: node health-server.js PORT   (binds 127.0.0.1 only)
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node health-server.js PORT');
  process.exit(2);
}
const body = JSON.stringify({ statusCode: 200, status: 'ok' });
const headers = {
  'content-type': 'application/json; charset=utf-8',
  'content-length': Buffer.byteLength(body),
};

http
  .createServer((req, res) => {
    if (req.url === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
      res.writeHead(200, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
    } else {
      res.writeHead(404);
      res.end();
    }
  })
  .listen(port, '127.0.0.1');
