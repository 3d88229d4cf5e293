import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { gunzipSync } from 'node:zlib';
import { cleanPath, gzip, writeTar } from './tar';

const enc = new TextEncoder();
let dirs: string[] = [];
afterEach(() => {
	for (const d of dirs) rmSync(d, { recursive: true, force: true });
	dirs = [];
});

async function toDisk(blob: Blob): Promise<{ dir: string; tarPath: string }> {
	const dir = mkdtempSync(join(tmpdir(), 'wrenn-tar-'));
	dirs.push(dir);
	const tarPath = join(dir, 'ctx.tar');
	writeFileSync(tarPath, new Uint8Array(await blob.arrayBuffer()));
	return { dir, tarPath };
}

describe('writeTar', () => {
	it('writes a ustar archive whose first header is byte-checked', async () => {
		const blob = writeTar([{ path: 'Dockerfile', data: enc.encode('FROM minimal\n'), mtime: 1700000000 }]);
		const b = new Uint8Array(await blob.arrayBuffer());
		// header + one data block + two end blocks
		expect(b.length).toBe(512 * 4);
		const text = (o: number, n: number) => new TextDecoder().decode(b.slice(o, o + n)).replace(/\0+$/, '');
		expect(text(0, 100)).toBe('Dockerfile');
		expect(text(100, 8)).toBe('0000644');
		expect(text(124, 12)).toBe('00000000015'); // 13 bytes
		expect(text(136, 12)).toBe((1700000000).toString(8).padStart(11, '0'));
		expect(text(156, 1)).toBe('0');
		expect(text(257, 6)).toBe('ustar');
		// The checksum: the sum of the header's bytes with its own field as spaces.
		let sum = 0;
		for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : b[i]!;
		expect(parseInt(text(148, 6), 8)).toBe(sum);
		expect(text(512, 13)).toBe('FROM minimal\n');
		expect(b.slice(512 * 2).every((x) => x === 0)).toBe(true);
	});

	it('is read back by tar, with directories, modes and a long path', async () => {
		const long = `${'d'.repeat(120)}/${'e'.repeat(120)}/${'f'.repeat(90)}.txt`; // > 100+155: PAX
		const mid = `${'a'.repeat(80)}/${'b'.repeat(80)}.txt`; // > 100: ustar prefix
		const bin = new Uint8Array(1500).map((_, i) => (i * 7) & 0xff);
		const blob = writeTar([
			{ path: 'Dockerfile', data: enc.encode('FROM minimal\nCOPY hello.txt /srv/\n') },
			{ path: './hello.txt', data: enc.encode('hello from the browser\n') },
			{ path: 'bin/run.sh', data: enc.encode('#!/bin/sh\necho hi\n'), mode: 0o755 },
			{ path: 'bin/blob', data: bin },
			{ path: 'empty', data: new Uint8Array() },
			{ path: mid, data: enc.encode('mid') },
			{ path: long, data: enc.encode('long') }
		]);
		const { dir, tarPath } = await toDisk(blob);
		const list = execFileSync('tar', ['-tf', tarPath], { encoding: 'utf8' }).trim().split('\n');
		expect(list).toEqual([
			'Dockerfile',
			'hello.txt',
			'bin/',
			'bin/run.sh',
			'bin/blob',
			'empty',
			`${'a'.repeat(80)}/`,
			mid,
			`${'d'.repeat(120)}/`,
			`${'d'.repeat(120)}/${'e'.repeat(120)}/`,
			long
		]);
		const out = join(dir, 'out');
		execFileSync('mkdir', [out]);
		execFileSync('tar', ['-xf', tarPath, '-C', out]);
		expect(readFileSync(join(out, 'hello.txt'), 'utf8')).toBe('hello from the browser\n');
		expect(new Uint8Array(readFileSync(join(out, 'bin/blob')))).toEqual(bin);
		expect(statSync(join(out, 'bin/run.sh')).mode & 0o777).toBe(0o755);
		expect(statSync(join(out, 'empty')).size).toBe(0);
		expect(readFileSync(join(out, mid), 'utf8')).toBe('mid');
		expect(readFileSync(join(out, long), 'utf8')).toBe('long');
	});

	it('refuses duplicates, escapes and a file used as a directory', () => {
		const d = enc.encode('x');
		expect(() => writeTar([{ path: 'a', data: d }, { path: './a', data: d }])).toThrow(/twice/);
		expect(() => writeTar([{ path: 'a', data: d }, { path: 'a/b', data: d }])).toThrow(/file and a directory/);
		expect(() => cleanPath('../etc/passwd')).toThrow(/leaves/);
		expect(() => cleanPath('./')).toThrow(/names no file/);
		expect(cleanPath('x\\y//z')).toBe('x/y/z');
	});
});

describe('gzip', () => {
	it('compresses a tar that zlib inflates back byte-equal', async () => {
		const tar = writeTar([{ path: 'Dockerfile', data: enc.encode('FROM minimal\n'.repeat(200)) }]);
		const gz = await gzip(tar);
		expect(gz).not.toBeNull();
		expect(gz!.size).toBeLessThan(tar.size);
		const back = gunzipSync(new Uint8Array(await gz!.arrayBuffer()));
		expect(new Uint8Array(back)).toEqual(new Uint8Array(await tar.arrayBuffer()));
	});
});
