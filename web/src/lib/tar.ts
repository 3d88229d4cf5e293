// A minimal tar (POSIX ustar) writer for template build contexts.
//
// Why our own and not an npm package: the build context needs regular files
// and their directories only, and the well-known writers (tar-stream,
// tar-js) either need Node's Buffer/stream polyfills or are unmaintained.
// This one is ~100 lines, has no dependency, produces what GNU tar and Go's
// archive/tar read (checked against `tar` in tar.test.ts), and writes a PAX
// header for a path longer than ustar's 100+155 bytes.

export interface TarEntry {
	/** Path inside the archive, '/'-separated, relative ("app/main.py"). */
	path: string;
	data: Uint8Array;
	/** Permission bits; default 0o644. */
	mode?: number;
	/** Modification time in seconds since the epoch; default 0 (reproducible). */
	mtime?: number;
}

const BLOCK = 512;
const enc = new TextEncoder();

/** Cleans a path for the archive; throws on one that escapes its root. */
export function cleanPath(p: string): string {
	const parts: string[] = [];
	for (const part of p.replace(/\\/g, '/').split('/')) {
		if (part === '' || part === '.') continue;
		if (part === '..') throw new Error(`the path ${p} leaves the build context`);
		parts.push(part);
	}
	if (!parts.length) throw new Error(`the path "${p}" names no file`);
	return parts.join('/');
}

function octal(n: number, width: number): string {
	// width-1 digits and a NUL, as ustar numeric fields are.
	return n.toString(8).padStart(width - 1, '0') + '\0';
}

function put(block: Uint8Array, offset: number, width: number, s: string | Uint8Array): void {
	const b = typeof s === 'string' ? enc.encode(s) : s;
	if (b.length > width) throw new Error(`tar field too long (${b.length} > ${width})`);
	block.set(b, offset);
}

function header(name: string, prefix: string, size: number, mode: number, mtime: number, type: string): Uint8Array {
	const h = new Uint8Array(BLOCK);
	put(h, 0, 100, name);
	put(h, 100, 8, octal(mode & 0o7777, 8));
	put(h, 108, 8, octal(0, 8)); // uid
	put(h, 116, 8, octal(0, 8)); // gid
	put(h, 124, 12, octal(size, 12));
	put(h, 136, 12, octal(Math.max(0, Math.floor(mtime)), 12));
	put(h, 148, 8, '        '); // checksum: spaces while summing
	put(h, 156, 1, type);
	put(h, 257, 6, 'ustar\0');
	put(h, 263, 2, '00');
	put(h, 345, 155, prefix);
	let sum = 0;
	for (const b of h) sum += b;
	put(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
	return h;
}

/** Splits a path into ustar's prefix and name, or null if it cannot fit. */
function split(path: string): { prefix: string; name: string } | null {
	const len = enc.encode(path).length;
	if (len <= 100) return { prefix: '', name: path };
	for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) {
		const prefix = path.slice(0, i);
		const name = path.slice(i + 1);
		if (enc.encode(prefix).length <= 155 && enc.encode(name).length <= 100 && name) return { prefix, name };
	}
	return null;
}

/** A PAX record "LEN key=value\n", where LEN counts the whole record. */
function paxRecord(key: string, value: string): string {
	const body = ` ${key}=${value}\n`;
	const bodyLen = enc.encode(body).length;
	let len = bodyLen + 1;
	while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
	return `${len}${body}`;
}

function padded(data: Uint8Array): Uint8Array[] {
	const rest = data.length % BLOCK;
	return rest ? [data, new Uint8Array(BLOCK - rest)] : [data];
}

/**
 * Writes the entries as a tar archive: each file's parent directories first
 * (once each), then the file. Two entries with one path are refused: the
 * build would see only the last and the user would not know.
 */
export function writeTar(entries: TarEntry[]): Blob {
	const parts: Uint8Array[] = [];
	const dirs = new Set<string>();
	const files = new Set<string>();
	function add(path: string, data: Uint8Array, mode: number, mtime: number, type: '0' | '5') {
		const full = type === '5' ? `${path}/` : path;
		let s = split(full);
		if (!s) {
			const pax = enc.encode(paxRecord('path', full));
			parts.push(header('PaxHeader', '', pax.length, 0o644, mtime, 'x'), ...padded(pax));
			// The ustar name is only a fallback for readers without PAX.
			s = { prefix: '', name: full.slice(-99) };
		}
		parts.push(header(s.name, s.prefix, type === '5' ? 0 : data.length, mode, mtime, type));
		if (type === '0' && data.length) parts.push(...padded(data));
	}
	for (const e of entries) {
		const path = cleanPath(e.path);
		if (files.has(path) || dirs.has(path)) throw new Error(`${path} is in the build context twice`);
		const mtime = e.mtime ?? 0;
		const segs = path.split('/');
		for (let i = 1; i < segs.length; i++) {
			const d = segs.slice(0, i).join('/');
			if (files.has(d)) throw new Error(`${d} is both a file and a directory`);
			if (dirs.has(d)) continue;
			dirs.add(d);
			add(d, new Uint8Array(), 0o755, mtime, '5');
		}
		files.add(path);
		add(path, e.data, e.mode ?? 0o644, mtime, '0');
	}
	parts.push(new Uint8Array(BLOCK * 2)); // the end: two zero blocks
	return new Blob(parts as BlobPart[], { type: 'application/x-tar' });
}

/**
 * Gzips a blob with the browser's CompressionStream (every current browser
 * has it); null where it is missing, and the tar goes as it is.
 */
export async function gzip(blob: Blob): Promise<Blob | null> {
	if (typeof CompressionStream === 'undefined') return null;
	const stream = blob.stream().pipeThrough(new CompressionStream('gzip'));
	return new Blob([await new Response(stream).arrayBuffer()], { type: 'application/gzip' });
}
