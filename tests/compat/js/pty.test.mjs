// A PTY through Wrenn's envd proxy: create, send input, resize, kill.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { newSandbox, poll, enc, TEST_TIMEOUT_MS } from './helpers.mjs'

test('pty: create, input, resize, kill', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const sbx = await newSandbox(t)
  const dec = new TextDecoder()
  let screen = ''
  const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (screen += dec.decode(d, { stream: true })), timeoutMs: 0 })
  const ended = term.wait().then(
    (res) => ({ res }),
    (error) => ({ error }),
  )
  assert.ok(term.pid > 0)

  // The typed line echoes as "pty-$((6*7))"; only the shell's answer holds 42.
  await sbx.pty.sendInput(term.pid, enc('echo pty-$((6*7))\n'))
  await poll('the shell to answer through the pty', () => screen.includes('pty-42'))

  await sbx.pty.sendInput(term.pid, enc('stty size\n'))
  await poll('the initial size 24x80', () => screen.includes('24 80'))

  await sbx.pty.resize(term.pid, { cols: 100, rows: 30 })
  await sbx.pty.sendInput(term.pid, enc('stty size\n'))
  await poll('the new size 30x100', () => screen.includes('30 100'))

  assert.equal(await sbx.pty.kill(term.pid), true)
  const end = await ended
  assert.ok(end.error, 'a killed pty ends with an error')
  await poll('the pty to leave the process list', async () => !(await sbx.commands.list()).some((p) => p.pid === term.pid))
})
