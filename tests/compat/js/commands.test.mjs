// Commands through Wrenn's envd proxy: run, streaming callbacks,
// background, stdin, kill, list, connect.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CommandExitError } from 'e2b'
import { newSandbox, poll, background, TEST_TIMEOUT_MS } from './helpers.mjs'

const opts = { timeout: TEST_TIMEOUT_MS }

test('commands.run: result, exit code, cwd, user', opts, async (t) => {
  const sbx = await newSandbox(t)
  const r = await sbx.commands.run('echo out; echo err >&2')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'out\n')
  assert.equal(r.stderr, 'err\n')

  await assert.rejects(sbx.commands.run('echo partial; echo bad >&2; exit 3'), (err) => {
    assert.ok(err instanceof CommandExitError, `${err}`)
    assert.equal(err.exitCode, 3)
    assert.equal(err.stdout, 'partial\n')
    assert.equal(err.stderr, 'bad\n')
    return true
  })

  assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
  assert.equal((await sbx.commands.run('whoami', { user: 'root' })).stdout, 'root\n')
})

test('commands.run: streaming onStdout/onStderr', opts, async (t) => {
  const sbx = await newSandbox(t)
  const out = []
  const err = []
  const r = await sbx.commands.run('for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 1; done', {
    onStdout: (d) => out.push(d),
    onStderr: (d) => err.push(d),
  })
  assert.equal(out.join(''), 'out1\nout2\nout3\n')
  assert.equal(err.join(''), 'err1\nerr2\nerr3\n')
  assert.equal(r.stdout, 'out1\nout2\nout3\n')
  assert.ok(out.length >= 2, `stdout came in ${out.length} callback(s) for lines a second apart: not streamed`)
  assert.ok(err.length >= 2, `stderr came in ${err.length} callback(s): not streamed`)
})

test('background commands: list, kill, wait', opts, async (t) => {
  const sbx = await newSandbox(t)
  const sleeper = await background(sbx, 'sleep 600')
  assert.ok(sleeper.handle.pid > 0)
  const procs = await sbx.commands.list()
  const p = procs.find((p) => p.pid === sleeper.handle.pid)
  assert.ok(p, `pid ${sleeper.handle.pid} not in ${JSON.stringify(procs)}`)
  assert.match([p.cmd, ...p.args].join(' '), /sleep 600/)

  assert.equal(await sbx.commands.kill(sleeper.handle.pid), true)
  const ended = await sleeper.ended
  assert.ok(ended.error, `a killed command's wait() must reject, got ${JSON.stringify(ended.res)}`)
  await poll('the killed process to leave the list', async () => !(await sbx.commands.list()).some((q) => q.pid === sleeper.handle.pid))
  assert.equal(await sbx.commands.kill(sleeper.handle.pid), false, 'killing a gone process answers false')

  const short = await sbx.commands.run('sleep 1; echo done', { background: true })
  const res = await short.wait()
  assert.equal(res.exitCode, 0)
  assert.equal(res.stdout, 'done\n')
})

test('stdin: sendStdin and closeStdin', opts, async (t) => {
  const sbx = await newSandbox(t)
  const cat = await background(sbx, 'cat', { stdin: true })
  await sbx.commands.sendStdin(cat.handle.pid, 'hello stdin\n')
  await poll('cat to echo the first line', () => cat.stdout().includes('hello stdin\n'))
  await cat.handle.sendStdin(new TextEncoder().encode('second line\n'))
  await poll('cat to echo the second line', () => cat.stdout().includes('second line\n'))
  await sbx.commands.closeStdin(cat.handle.pid)
  const ended = await cat.ended
  assert.ok(!ended.error, `cat after EOF: ${ended.error}`)
  assert.equal(ended.res.exitCode, 0)
  assert.equal(ended.res.stdout, 'hello stdin\nsecond line\n')
})

test('connect to a running command', opts, async (t) => {
  const sbx = await newSandbox(t)
  const ticker = await background(sbx, 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done')
  await poll('the first tick', () => ticker.stdout().includes('tick 1\n'))
  await ticker.handle.disconnect()

  const seen = []
  const again = await sbx.commands.connect(ticker.handle.pid, { onStdout: (d) => seen.push(d), timeoutMs: 0 })
  const againEnded = again.wait().then(
    (res) => ({ res }),
    (error) => ({ error }),
  )
  assert.equal(again.pid, ticker.handle.pid)
  await poll('new ticks through connect', () => /tick \d+\n[^]*tick \d+\n/.test(seen.join('')))
  assert.equal(await sbx.commands.kill(ticker.handle.pid), true)
  const ended = await againEnded
  assert.ok(ended.error, 'the connected handle sees the kill')
})
