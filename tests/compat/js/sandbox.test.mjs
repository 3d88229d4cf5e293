// Sandbox lifecycle through the control plane: create, getInfo, list,
// setTimeout, metrics, kill.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, SandboxNotFoundError } from 'e2b'
import { setTimeout as sleep } from 'node:timers/promises'
import { newSandbox, runId, poll, background, assertNear, REQUEST_TIMEOUT_MS, TEST_TIMEOUT_MS, SANDBOX_TIMEOUT_MS } from './helpers.mjs'

const opts = { timeout: TEST_TIMEOUT_MS }

test('create with metadata and envs', opts, async (t) => {
  const id = runId()
  const sbx = await newSandbox(t, {
    metadata: { 'compat-id': id, purpose: 'create' },
    envs: { COMPAT_GREETING: 'hello from js', COMPAT_SECOND: 'two words' },
  })
  assert.match(sbx.sandboxId, /^\S+$/)

  const r = await sbx.commands.run('printf "%s|%s|%s" "$COMPAT_GREETING" "$COMPAT_SECOND" "$(whoami)"')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'hello from js|two words|user', 'sandbox envs reach commands, which run as "user" by default')

  const r2 = await sbx.commands.run('printf %s "$COMPAT_GREETING"', { envs: { COMPAT_GREETING: 'per command' } })
  assert.equal(r2.stdout, 'per command', 'a command env overrides the sandbox env')

  const info = await sbx.getInfo()
  assert.deepEqual(info.metadata, { 'compat-suite': 'js', 'compat-id': id, purpose: 'create' })
})

test('getInfo', opts, async (t) => {
  const id = runId()
  const before = Date.now()
  const sbx = await newSandbox(t, { metadata: { 'compat-id': id } })
  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.ok(info.templateId, `templateId ${JSON.stringify(info.templateId)}`)
  assert.equal(info.state, 'running')
  assert.equal(info.metadata['compat-id'], id)
  assertNear(assert, info.startedAt, before, 5 * 60_000, 'startedAt')
  assertNear(assert, info.endAt, info.startedAt.getTime() + SANDBOX_TIMEOUT_MS, 2 * 60_000, 'endAt (startedAt + the create timeout)')
  assert.ok(info.cpuCount >= 1, `cpuCount ${info.cpuCount}`)
  assert.ok(info.memoryMB > 0, `memoryMB ${info.memoryMB}`)
  assert.match(info.envdVersion, /^\d+\.\d+\.\d+/)

  const again = await Sandbox.getInfo(sbx.sandboxId, { requestTimeoutMs: REQUEST_TIMEOUT_MS })
  assert.equal(again.sandboxId, sbx.sandboxId)
  assert.equal(again.templateId, info.templateId)
})

test('list by metadata and state, in pages', opts, async (t) => {
  const id = runId()
  // A value with characters that need escaping at every level of the
  // metadata query encoding.
  const note = 'list & filter=yes/100%'
  const a = await newSandbox(t, { metadata: { 'compat-id': id, 'compat-note': note } })
  const b = await newSandbox(t, { metadata: { 'compat-id': id, 'compat-note': note } })
  const want = [a.sandboxId, b.sandboxId].sort()
  const ids = (items) => items.map((s) => s.sandboxId).sort()

  const all = await Sandbox.list({ query: { metadata: { 'compat-id': id } }, requestTimeoutMs: REQUEST_TIMEOUT_MS }).nextItems()
  assert.deepEqual(ids(all), want)
  for (const s of all) {
    assert.equal(s.state, 'running')
    assert.equal(s.metadata['compat-note'], note)
    assert.ok(s.startedAt instanceof Date && !Number.isNaN(s.startedAt.getTime()))
  }

  const both = await Sandbox.list({ query: { metadata: { 'compat-id': id, 'compat-note': note } } }).nextItems()
  assert.deepEqual(ids(both), want, 'metadata filter with escaped characters')

  const none = await Sandbox.list({ query: { metadata: { 'compat-id': id + '-nobody' } } }).nextItems()
  assert.deepEqual(none, [])
  const wrongValue = await Sandbox.list({ query: { metadata: { 'compat-id': id, 'compat-note': 'other' } } }).nextItems()
  assert.deepEqual(wrongValue, [], 'every metadata pair must match')

  const running = await Sandbox.list({ query: { metadata: { 'compat-id': id }, state: ['running'] } }).nextItems()
  assert.deepEqual(ids(running), want)
  const paused = await Sandbox.list({ query: { metadata: { 'compat-id': id }, state: ['paused'] } }).nextItems()
  assert.deepEqual(paused, [])
  const either = await Sandbox.list({ query: { metadata: { 'compat-id': id }, state: ['running', 'paused'] } }).nextItems()
  assert.deepEqual(ids(either), want)

  const pager = Sandbox.list({ query: { metadata: { 'compat-id': id } }, limit: 1 })
  const first = await pager.nextItems()
  assert.equal(first.length, 1)
  assert.ok(pager.hasNext, 'a next page after 1 of 2 (x-next-token)')
  const second = await pager.nextItems()
  assert.equal(second.length, 1)
  let seen = [...first, ...second]
  if (pager.hasNext) {
    seen = seen.concat(await pager.nextItems())
    assert.ok(!pager.hasNext, 'paging ends')
  }
  assert.deepEqual(ids(seen), want)
})

test('setTimeout sets an absolute end and the sandbox ends then', opts, async (t) => {
  const sbx = await newSandbox(t)
  await sbx.setTimeout(10 * 60_000)
  let info = await sbx.getInfo()
  assertNear(assert, info.endAt, Date.now() + 10 * 60_000, 60_000, 'endAt after setTimeout(10 min)')

  await sbx.setTimeout(3 * 60_000)
  info = await sbx.getInfo()
  assertNear(assert, info.endAt, Date.now() + 3 * 60_000, 60_000, 'endAt after setTimeout(3 min): shortening works')

  await sbx.setTimeout(10_000)
  await poll(
    'the sandbox to end at its timeout',
    async () => {
      try {
        await Sandbox.getInfo(sbx.sandboxId)
        return false
      } catch (err) {
        if (err instanceof SandboxNotFoundError) return true
        throw err
      }
    },
    { timeoutMs: 180_000, intervalMs: 1000 },
  )
})

test('metrics', opts, async (t) => {
  const start = new Date(Date.now() - 60_000)
  const sbx = await newSandbox(t)
  await sbx.commands.run('dd if=/dev/zero of=/dev/null bs=1M count=64 2>/dev/null')
  const metrics = await poll(
    'a metrics sample',
    async () => {
      const m = await sbx.getMetrics({ start, end: new Date(Date.now() + 60_000) })
      return m.length > 0 && m
    },
    { timeoutMs: 240_000, intervalMs: 2000 },
  )
  for (const m of metrics) {
    assertNear(assert, m.timestamp, Date.now(), 10 * 60_000, 'metric timestamp')
    assert.ok(m.timestamp.getTime() >= start.getTime() - 1000, `sample at ${m.timestamp.toISOString()} before start ${start.toISOString()}`)
    assert.ok(m.cpuCount >= 1, `cpuCount ${m.cpuCount}`)
    assert.ok(m.cpuUsedPct >= 0, `cpuUsedPct ${m.cpuUsedPct}`)
    assert.ok(m.memTotal > 0 && m.memUsed > 0 && m.memUsed <= m.memTotal, `mem ${m.memUsed}/${m.memTotal}`)
    assert.ok(m.diskTotal > 0 && m.diskUsed >= 0 && m.diskUsed <= m.diskTotal, `disk ${m.diskUsed}/${m.diskTotal}`)
  }
  const all = await Sandbox.getMetrics(sbx.sandboxId)
  assert.ok(all.length >= 1, 'metrics without a range')
  const past = await sbx.getMetrics({ start: new Date(Date.now() - 3 * 3600_000), end: new Date(Date.now() - 2 * 3600_000) })
  assert.deepEqual(past, [], 'no samples in a range before the sandbox existed')
})

test('kill', opts, async (t) => {
  const id = runId()
  const sbx = await newSandbox(t, { metadata: { 'compat-id': id } })
  const running = await background(sbx, 'sleep 600')
  assert.equal(await sbx.kill(), true)
  // A command stream open at the kill ends with it, as in E2B ("killed
  // while the request was in flight"): a caller awaiting wait() is not left
  // hanging.
  const killedAt = Date.now()
  const end = await Promise.race([running.ended, sleep(30_000, null, { ref: false })])
  assert.ok(end, 'a command stream open at kill was still open 30 s later')
  assert.ok(end.error, `the stream of a command in a killed sandbox ended without an error: ${JSON.stringify(end.res)}`)
  console.log(`kill: the open command stream ended ${Date.now() - killedAt} ms after the kill`)
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false, 'killing a killed sandbox answers false (404)')
  const listed = await Sandbox.list({ query: { metadata: { 'compat-id': id } } }).nextItems()
  assert.deepEqual(listed, [])
  await assert.rejects(sbx.commands.run('true', { requestTimeoutMs: 60_000 }), 'commands on a killed sandbox fail')
})
