// What goes beyond one running VM: pause and connect with a live process,
// fork, snapshots, and a port served through getHost.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'
import { newSandbox, killQuietly, runId, poll, background, hostGet, REQUEST_TIMEOUT_MS, SANDBOX_TIMEOUT_MS, TEST_TIMEOUT_MS } from './helpers.mjs'

const opts = { timeout: TEST_TIMEOUT_MS }

// keeper holds a random secret in memory only and answers every stdin line
// with it and a line count: the same secret and a count that goes on after
// a pause proves the process's memory survived.
const KEEPER = `import secrets, sys
s = secrets.token_hex(8)
print("ready", s, flush=True)
for n, line in enumerate(sys.stdin):
    print("answer", s, n, line.strip(), flush=True)
`

async function startKeeper(sbx) {
  await sbx.files.write('/home/user/keeper.py', KEEPER)
  const k = await background(sbx, 'python3 -u /home/user/keeper.py', { stdin: true })
  const m = await poll('keeper to start', () => /ready ([0-9a-f]{16})\n/.exec(k.stdout()), { timeoutMs: 180_000 })
  return { ...k, secret: m[1] }
}

// ask sends a line to the keeper and waits for its answer on out().
async function ask(sbx, pid, out, line, want) {
  await sbx.commands.sendStdin(pid, line + '\n')
  await poll(`keeper to answer "${want}"`, () => out().includes(want + '\n'))
}

test('pause, then connect: the running process keeps its memory', opts, async (t) => {
  const id = runId()
  const sbx = await newSandbox(t, { metadata: { 'compat-id': id } })
  const keeper = await startKeeper(sbx)
  await ask(sbx, keeper.handle.pid, keeper.stdout, 'before', `answer ${keeper.secret} 0 before`)
  await sbx.files.write('/home/user/pause-marker.txt', 'kept')

  assert.equal(await sbx.pause({ requestTimeoutMs: REQUEST_TIMEOUT_MS }), true)
  assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
  const pausedList = await Sandbox.list({ query: { metadata: { 'compat-id': id }, state: ['paused'] } }).nextItems()
  assert.deepEqual(pausedList.map((s) => s.sandboxId), [sbx.sandboxId])
  assert.equal(await Sandbox.pause(sbx.sandboxId), false, 'pausing a paused sandbox answers false (409)')

  const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: SANDBOX_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS })
  assert.equal(back.sandboxId, sbx.sandboxId)
  assert.equal((await back.getInfo()).state, 'running')

  const procs = await back.commands.list()
  assert.ok(procs.some((p) => p.pid === keeper.handle.pid), `keeper pid ${keeper.handle.pid} gone after resume: ${JSON.stringify(procs)}`)
  let out = ''
  const again = await back.commands.connect(keeper.handle.pid, { onStdout: (d) => (out += d), timeoutMs: 0 })
  again.wait().catch(() => {})
  await ask(back, keeper.handle.pid, () => out, 'after', `answer ${keeper.secret} 1 after`)
  assert.equal(await back.files.read('/home/user/pause-marker.txt'), 'kept')

  // connect on a running sandbox is a no-op that succeeds, and the first
  // handle (holding the envd access token create returned) still works.
  await sbx.connect()
  assert.equal((await sbx.commands.run('echo still')).stdout, 'still\n', 'the envd access token from create still works after resume')
  await back.commands.kill(keeper.handle.pid)
})

test('fork: a copy with the files and the running process', opts, async (t) => {
  const src = await newSandbox(t)
  const keeper = await startKeeper(src)
  await ask(src, keeper.handle.pid, keeper.stdout, 'one', `answer ${keeper.secret} 0 one`)
  await src.files.write('/home/user/fork-me.txt', 'from source')

  const results = await src.fork({ count: 1, timeoutMs: SANDBOX_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS })
  assert.equal(results.length, 1)
  const fork = results[0]
  if (fork instanceof Error) throw fork
  t.after(() => killQuietly(fork))
  assert.notEqual(fork.sandboxId, src.sandboxId)
  assert.equal((await fork.getInfo()).state, 'running')

  assert.equal(await fork.files.read('/home/user/fork-me.txt'), 'from source')
  let out = ''
  const h = await fork.commands.connect(keeper.handle.pid, { onStdout: (d) => (out += d), timeoutMs: 0 })
  h.wait().catch(() => {})
  await ask(fork, keeper.handle.pid, () => out, 'in fork', `answer ${keeper.secret} 1 in fork`)

  // The two are independent from here on.
  await fork.files.write('/home/user/fork-me.txt', 'changed in fork')
  assert.equal(await src.files.read('/home/user/fork-me.txt'), 'from source')
  // A fork may pause the source for a moment, ending its streams: listen
  // afresh.
  let srcOut = ''
  const hs = await src.commands.connect(keeper.handle.pid, { onStdout: (d) => (srcOut += d), timeoutMs: 0 })
  hs.wait().catch(() => {})
  await ask(src, keeper.handle.pid, () => srcOut, 'in source', `answer ${keeper.secret} 1 in source`)
})

test('snapshots: create, list, create a sandbox from one, delete', opts, async (t) => {
  const src = await newSandbox(t)
  await src.files.write('/home/user/snap.txt', 'in the snapshot')
  const name = runId()
  const snap = await src.createSnapshot({ name, requestTimeoutMs: REQUEST_TIMEOUT_MS })
  assert.ok(snap.snapshotId, `snapshotId ${JSON.stringify(snap)}`)
  assert.ok(Array.isArray(snap.names))
  let deleted = false
  t.after(async () => {
    if (!deleted) await Sandbox.deleteSnapshot(snap.snapshotId).catch((err) => console.error(`cleanup: delete snapshot: ${err}`))
  })

  // The source goes on running.
  assert.equal((await src.getInfo()).state, 'running')
  assert.equal((await src.commands.run('cat /home/user/snap.txt')).stdout, 'in the snapshot')
  await src.files.write('/home/user/snap.txt', 'after the snapshot')

  const mine = await src.listSnapshots().nextItems()
  assert.ok(mine.some((s) => s.snapshotId === snap.snapshotId), `snapshot ${snap.snapshotId} not listed for its sandbox: ${JSON.stringify(mine)}`)
  const all = []
  for (const pager = Sandbox.listSnapshots(); pager.hasNext; ) all.push(...(await pager.nextItems()))
  assert.ok(all.some((s) => s.snapshotId === snap.snapshotId), 'snapshot in the full list')

  await src.kill()
  const copy = await Sandbox.create(snap.snapshotId, { timeoutMs: SANDBOX_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS })
  t.after(() => killQuietly(copy))
  assert.equal(await copy.files.read('/home/user/snap.txt'), 'in the snapshot')
  await copy.kill()

  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
  deleted = true
  const after = []
  for (const pager = Sandbox.listSnapshots(); pager.hasNext; ) after.push(...(await pager.nextItems()))
  assert.ok(!after.some((s) => s.snapshotId === snap.snapshotId), 'deleted snapshot still listed')
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false, 'deleting it again answers false (404)')
})

test('getHost: a port served in the sandbox', opts, async (t) => {
  const sbx = await newSandbox(t)
  const token = runId()
  await sbx.files.write('/home/user/www/index.html', token)
  const server = await background(sbx, 'python3 -m http.server 8000 --bind 0.0.0.0 --directory /home/user/www')

  const host = sbx.getHost(8000)
  assert.ok(host.startsWith(`8000-${sbx.sandboxId}.`), `getHost(8000) = ${host}`)
  const headers = sbx.trafficAccessToken ? { 'e2b-traffic-access-token': sbx.trafficAccessToken } : {}
  const res = await poll(
    `GET http://${host}/index.html`,
    async () => {
      const r = await hostGet(host, '/index.html', headers)
      if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body.slice(0, 300)}`)
      return r
    },
    { timeoutMs: 180_000, intervalMs: 1000 },
  )
  assert.equal(res.body, token)
  const missing = await hostGet(host, '/nope.html', headers)
  assert.equal(missing.status, 404)
  assert.match(missing.body, /File not found/, 'the server in the sandbox answers, not the proxy')
  await sbx.commands.kill(server.handle.pid)
})
