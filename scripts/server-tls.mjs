// The TLS twin of shared/baseline/seed-node/server.js, for scripts/compare.sh's wss:// round: the same
// behaviour (acks every KEEP_ALIVE frame with KEEP_ALIVE_ACK; on SIGINT/SIGTERM prints one JSON line with
// frames received, acks sent, peak clients) behind https.createServer with a test certificate.
//
//   SEED_NODE_DIR=target/seed-node TLS_CERT=leaf.pem TLS_KEY=leaf.key PORT=9401 node scripts/server-tls.mjs
//
// `ws` is loaded from SEED_NODE_DIR's node_modules (default: target/seed-node next to this script's
// parent), the copy compare.sh installs, so that both servers run the same ws version.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const seedDir = path.resolve(process.env.SEED_NODE_DIR || path.join(here, '..', 'target', 'seed-node'));
const { WebSocketServer } = createRequire(path.join(seedDir, 'package.json'))('ws');

const port = Number(process.env.PORT || 9401);
if (!process.env.TLS_CERT || !process.env.TLS_KEY) {
  console.error('server-tls: set TLS_CERT and TLS_KEY (PEM files)');
  process.exit(2);
}
const server = https.createServer({ cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) });
const wss = new WebSocketServer({ server, perMessageDeflate: false });
let frames = 0, acks = 0, peak = 0;
wss.on('connection', (ws) => {
  peak = Math.max(peak, wss.clients.size);
  ws.on('message', (data) => {
    frames++;
    try {
      const m = JSON.parse(data.toString());
      if (m.type === 'KEEP_ALIVE') { acks++; ws.send(JSON.stringify({ type: 'KEEP_ALIVE_ACK', connectionId: m.connectionId, timestamp: m.timestamp })); }
    } catch {}
  });
});
const done = () => { console.log(JSON.stringify({ frames, acks, peak_clients: peak })); process.exit(0); };
process.on('SIGINT', done); process.on('SIGTERM', done);
server.listen(port, '127.0.0.1', () => console.log(`listening ${port} (tls)`));
