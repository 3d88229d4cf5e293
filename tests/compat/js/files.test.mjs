// Files through Wrenn's envd proxy: write and read (text, binary), list
// with depth, watchDir, rename, remove, exists, getInfo.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { FileType, FilesystemEventType, NotFoundError } from 'e2b'
import { newSandbox, poll, TEST_TIMEOUT_MS } from './helpers.mjs'

const opts = { timeout: TEST_TIMEOUT_MS }

test('write and read text and binary', opts, async (t) => {
  const sbx = await newSandbox(t)
  const text = 'héllo wörld ✓\nsecond line\n'
  const w = await sbx.files.write('/home/user/compat/hello.txt', text)
  assert.equal(w.path, '/home/user/compat/hello.txt')
  assert.equal(await sbx.files.read('/home/user/compat/hello.txt'), text)
  assert.equal(await sbx.files.read('/home/user/compat/hello.txt', { format: 'text' }), text)

  // Every byte value, several times over, and a size that is not a power
  // of two.
  const bytes = new Uint8Array(256 * 1024 + 7)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + (i >> 8)) % 256
  await sbx.files.write('/home/user/compat/blob.bin', bytes.buffer)
  const back = await sbx.files.read('/home/user/compat/blob.bin', { format: 'bytes' })
  assert.ok(back instanceof Uint8Array)
  assert.equal(back.length, bytes.length)
  assert.ok(Buffer.from(back).equals(Buffer.from(bytes)), 'binary round trip differs')

  const sum = await sbx.commands.run('sha256sum /home/user/compat/blob.bin')
  assert.equal(sum.stdout.split(' ')[0], createHash('sha256').update(bytes).digest('hex'), 'the guest sees the same bytes')
  const owner = await sbx.commands.run('stat -c %U /home/user/compat/blob.bin')
  assert.equal(owner.stdout, 'user\n', 'files are written as the default user')
})

test('list with depth', opts, async (t) => {
  const sbx = await newSandbox(t)
  const root = '/home/user/tree'
  assert.equal(await sbx.files.makeDir(`${root}/a/b`), true)
  assert.equal(await sbx.files.makeDir(`${root}/a/b`), false, 'makeDir of an existing directory answers false')
  await sbx.files.write(`${root}/top.txt`, 'top')
  await sbx.files.write(`${root}/a/mid.txt`, 'mid')
  await sbx.files.write(`${root}/a/b/deep.txt`, 'deep')

  const paths = (entries) => entries.map((e) => e.path).sort()
  const one = await sbx.files.list(root)
  assert.deepEqual(paths(one), [`${root}/a`, `${root}/top.txt`])
  const byName = Object.fromEntries(one.map((e) => [e.name, e]))
  assert.equal(byName.a.type, FileType.DIR)
  assert.equal(byName['top.txt'].type, FileType.FILE)
  assert.equal(byName['top.txt'].size, 3)

  const two = await sbx.files.list(root, { depth: 2 })
  assert.deepEqual(paths(two), [`${root}/a`, `${root}/a/b`, `${root}/a/mid.txt`, `${root}/top.txt`])
  const three = await sbx.files.list(root, { depth: 3 })
  assert.deepEqual(paths(three), [`${root}/a`, `${root}/a/b`, `${root}/a/b/deep.txt`, `${root}/a/mid.txt`, `${root}/top.txt`])
})

test('watchDir', opts, async (t) => {
  const sbx = await newSandbox(t)
  const dir = '/home/user/watched'
  await sbx.files.makeDir(`${dir}/sub`)

  const events = []
  const w = await sbx.files.watchDir(dir, (e) => events.push(e), { timeoutMs: 0 })
  t.after(() => w.stop())
  await sbx.files.write(`${dir}/new.txt`, 'x')
  await poll('a create or write event for new.txt', () =>
    events.some((e) => e.name === 'new.txt' && (e.type === FilesystemEventType.CREATE || e.type === FilesystemEventType.WRITE)),
  )
  await sbx.files.remove(`${dir}/new.txt`)
  await poll('a remove event for new.txt', () => events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.REMOVE))
  await w.stop()

  const deep = []
  const wr = await sbx.files.watchDir(dir, (e) => deep.push(e), { recursive: true, timeoutMs: 0 })
  t.after(() => wr.stop())
  await sbx.files.write(`${dir}/sub/deep.txt`, 'y')
  await poll('an event for sub/deep.txt from a recursive watch', () => deep.some((e) => e.name === 'sub/deep.txt'), { timeoutMs: 60_000 })
  await wr.stop()
})

test('rename, remove, exists, getInfo', opts, async (t) => {
  const sbx = await newSandbox(t)
  const a = '/home/user/ops/a.txt'
  const b = '/home/user/ops/b.txt'
  await sbx.files.write(a, 'abc')

  const info = await sbx.files.getInfo(a)
  assert.equal(info.name, 'a.txt')
  assert.equal(info.path, a)
  assert.equal(info.type, FileType.FILE)
  assert.equal(info.size, 3)
  const dir = await sbx.files.getInfo('/home/user/ops')
  assert.equal(dir.type, FileType.DIR)

  assert.equal(await sbx.files.exists(a), true)
  const moved = await sbx.files.rename(a, b)
  assert.equal(moved.path, b)
  assert.equal(await sbx.files.exists(a), false)
  assert.equal(await sbx.files.exists(b), true)
  assert.equal(await sbx.files.read(b), 'abc')

  await sbx.files.remove(b)
  assert.equal(await sbx.files.exists(b), false)
  await assert.rejects(sbx.files.read(b), NotFoundError)
  await assert.rejects(sbx.files.getInfo(b), NotFoundError)
  await sbx.files.remove('/home/user/ops')
  assert.equal(await sbx.files.exists('/home/user/ops'), false)
})
