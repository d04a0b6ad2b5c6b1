// Runs bittorrent-tracker's server, WebSocket only, on 127.0.0.1 for the tracker tests.
//
//   node scripts/bittorrent-tracker.mjs [PORT]     (PORT 0, the default, picks a free one)
//
// Prints `bittorrent-tracker listening on ws://127.0.0.1:PORT` once listening. The module is
// the one scripts/setup-deps.sh installs into .tools/npm.

import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const serverUrl = new URL('../.tools/npm/node_modules/bittorrent-tracker/server.js', import.meta.url)
if (!existsSync(fileURLToPath(serverUrl))) {
  console.error(`bittorrent-tracker not found at ${fileURLToPath(serverUrl)}: run scripts/setup-deps.sh`)
  process.exit(1)
}
const { default: Server } = await import(serverUrl.href)

const port = Number(process.argv[2] ?? 0)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port ${process.argv[2]}`)
  process.exit(2)
}

const server = new Server({ udp: false, http: false, ws: true, stats: false })
server.on('error', (err) => {
  console.error(`bittorrent-tracker: ${err.message}`)
  process.exit(1)
})
server.on('warning', (err) => console.error(`bittorrent-tracker warning: ${err.message}`))
server.listen(port, '127.0.0.1', () => {
  console.log(`bittorrent-tracker listening on ws://127.0.0.1:${server.http.address().port}`)
})

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)))
}
