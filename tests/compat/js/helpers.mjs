// Shared helpers for the JS compat tests. The SDK itself reads E2B_API_URL,
// E2B_API_KEY and E2B_SANDBOX_URL from the environment (set by
// tests/compat/compat_test.go); nothing here talks to Wrenn but the SDK,
// except hostGet, which fetches a sandbox port the way a browser would.
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Sandbox } from 'e2b'

// Guests run under TCG emulation here (about 20x slower than KVM): every
// bound is generous, and every wait polls rather than sleeping a fixed time.
export const REQUEST_TIMEOUT_MS = 180_000
export const TEST_TIMEOUT_MS = 15 * 60_000
export const SANDBOX_TIMEOUT_MS = 20 * 60_000

// runId is a fresh tag for one test's metadata, so a list query finds only
// what that test made.
export function runId() {
  return 'js-' + randomBytes(6).toString('hex')
}

// newSandbox creates a sandbox from the default template ("base") and kills
// it when the test ends, passed or not.
export async function newSandbox(t, opts = {}) {
  const sbx = await Sandbox.create({
    timeoutMs: SANDBOX_TIMEOUT_MS,
    requestTimeoutMs: REQUEST_TIMEOUT_MS,
    ...opts,
    metadata: { 'compat-suite': 'js', ...(opts.metadata ?? {}) },
  })
  t.after(() => killQuietly(sbx))
  return sbx
}

// killQuietly kills a sandbox at cleanup; a sandbox the test already
// killed answers false, which is fine here.
export async function killQuietly(sbx) {
  try {
    await sbx.kill({ requestTimeoutMs: REQUEST_TIMEOUT_MS })
  } catch (err) {
    console.error(`cleanup: kill ${sbx.sandboxId}: ${err}`)
  }
}

// poll calls fn until it returns a truthy value, which poll returns. An
// error thrown by fn counts as "not yet" and is reported if time runs out.
export async function poll(what, fn, { timeoutMs = 120_000, intervalMs = 250 } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `; last error: ${last}` : ''}`)
    }
    await sleep(intervalMs)
  }
}

// background starts a command that outlives the call and collects its
// output; the handle's own end (kill, pause) must not surface as an
// unhandled rejection.
export async function background(sbx, cmd, opts = {}) {
  const out = []
  const err = []
  const handle = await sbx.commands.run(cmd, {
    background: true,
    timeoutMs: 0,
    requestTimeoutMs: REQUEST_TIMEOUT_MS,
    onStdout: (d) => out.push(d),
    onStderr: (d) => err.push(d),
    ...opts,
  })
  const ended = handle.wait().then(
    (res) => ({ res }),
    (error) => ({ error }),
  )
  return { handle, ended, stdout: () => out.join(''), stderr: () => err.join('') }
}

// hostGet fetches path from host (what sandbox.getHost(port) returns) by
// sending the request to the sandbox URL Wrenn serves (E2B_SANDBOX_URL)
// with that Host header: what DNS for *.domain pointing at wrenn-cp gives.
export function hostGet(host, path = '/', headers = {}) {
  const base = new URL(process.env.E2B_SANDBOX_URL)
  if (base.protocol !== 'http:') throw new Error(`E2B_SANDBOX_URL ${base} is not plain http`)
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        hostname: base.hostname,
        port: base.port || 80,
        path,
        method: 'GET',
        headers: { host, ...headers },
        timeout: 60_000,
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode, body }))
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error(`GET ${path} Host ${host}: no answer in 60 s`)))
    req.on('error', reject)
    req.end()
  })
}

// near asserts that date d is within slackMs of the expected time.
export function assertNear(assert, d, expectedMs, slackMs, what) {
  assert.ok(d instanceof Date && !Number.isNaN(d.getTime()), `${what}: ${d} is not a date`)
  const off = d.getTime() - expectedMs
  assert.ok(Math.abs(off) <= slackMs, `${what}: ${d.toISOString()} is ${Math.round(off / 1000)} s from ${new Date(expectedMs).toISOString()} (allowed ±${slackMs / 1000} s)`)
}

export const enc = (s) => new TextEncoder().encode(s)
