import { describe, expect, it } from 'vitest';
import { ApiError } from './api';
import {
	applyEntry,
	emptyView,
	followBuildLog,
	parseBuildArgs,
	progressText,
	registryAuthHeader,
	type FollowState
} from './builds';
import type { TemplateBuildLogEntry } from './types';

const T = '2026-12-07T00:00:00Z';
function entry(seq: number, phase: TemplateBuildLogEntry['phase'], text: string, extra: Partial<TemplateBuildLogEntry> = {}): TemplateBuildLogEntry {
	return { seq, time: T, phase, text, ...extra };
}
const line = (e: TemplateBuildLogEntry) => JSON.stringify(e) + '\n';

/** A response whose body yields the chunks, then ends or breaks. */
function streamed(chunks: string[], end: 'close' | 'break'): Response {
	const enc = new TextEncoder();
	let i = 0;
	const body = new ReadableStream<Uint8Array>({
		pull(ctl) {
			if (i < chunks.length) ctl.enqueue(enc.encode(chunks[i++]));
			else if (end === 'close') ctl.close();
			else ctl.error(new TypeError('network error: connection reset'));
		}
	});
	return new Response(body, { headers: { 'Content-Type': 'application/x-ndjson' } });
}

const log = [
	entry(0, 'queued', 'building web version 1'),
	entry(1, 'step', 'Dockerfile:1: FROM minimal', { step: 1, steps: 3, cached: true }),
	entry(2, 'step', 'Dockerfile:2: COPY hello.txt /srv/', { step: 2, steps: 3 }),
	entry(3, 'step', 'Dockerfile:3: RUN echo hi', { step: 3, steps: 3 }),
	entry(4, 'step', 'hi', { step: 3, steps: 3 }),
	entry(5, 'image', 'writing the template image'),
	entry(6, 'done', 'built web in 3s (1 of 3 steps cached)')
];

describe('followBuildLog', () => {
	it('resumes from the seq after the last one seen, delivering each entry once', async () => {
		const offsets: number[] = [];
		const states: FollowState[] = [];
		const got: number[] = [];
		const sleeps: number[] = [];
		await followBuildLog({
			open: async (offset) => {
				offsets.push(offset);
				if (offsets.length === 1) {
					// Breaks in the middle of entry 3's line.
					return streamed([line(log[0]!) + line(log[1]!), line(log[2]!) + line(log[3]!).slice(0, 10)], 'break');
				}
				if (offsets.length === 2) throw new ApiError(0, 'network', 'connection refused');
				if (offsets.length === 3) throw new ApiError(503, 'unavailable', 'busy');
				// The server starts at the offset asked, but a repeated
				// entry (a proxy replaying) must still be dropped.
				return streamed([line(log[2]!), log.slice(3).map(line).join('')], 'close');
			},
			onEntry: (e) => got.push(e.seq),
			finished: async () => {
				throw new Error('not asked: the log ended with a final entry');
			},
			onState: (s) => states.push(s),
			sleep: async (ms) => {
				sleeps.push(ms);
			},
			backoffMs: [10, 20, 40]
		});
		expect(got).toEqual([0, 1, 2, 3, 4, 5, 6]);
		expect(offsets).toEqual([0, 3, 3, 3]);
		expect(sleeps).toEqual([10, 20, 40]);
		expect(states.map((s) => s.kind)).toEqual(['streaming', 'reconnecting', 'reconnecting', 'reconnecting', 'streaming', 'ended']);
	});

	it('asks whether the build ended when a stream closes without a final entry', async () => {
		let opens = 0;
		let asked = 0;
		const got: number[] = [];
		await followBuildLog({
			open: async () => {
				opens++;
				return opens === 1 ? streamed([line(log[0]!)], 'close') : streamed([line(log[1]!)], 'close');
			},
			onEntry: (e) => got.push(e.seq),
			// Still building after the first close; ended (cancelled) after the second.
			finished: async () => ++asked === 2,
			sleep: async () => {}
		});
		expect(got).toEqual([0, 1]);
		expect(opens).toBe(2);
	});

	it('does not retry a refusal, and gives up after maxAttempts breaks', async () => {
		await expect(
			followBuildLog({
				open: async () => Promise.reject(new ApiError(404, 'not_found', 'build not found')),
				onEntry: () => {},
				finished: async () => false,
				sleep: async () => {}
			})
		).rejects.toMatchObject({ status: 404 });
		let opens = 0;
		await expect(
			followBuildLog({
				open: async () => {
					opens++;
					return streamed([], 'break');
				},
				onEntry: () => {},
				finished: async () => false,
				sleep: async () => {},
				maxAttempts: 3
			})
		).rejects.toThrow(/lost the build log/);
		expect(opens).toBe(4);
	});

	it('stops when aborted', async () => {
		const ctl = new AbortController();
		const p = followBuildLog({
			open: async () => streamed([], 'break'),
			onEntry: () => {},
			finished: async () => false,
			signal: ctl.signal,
			sleep: (_ms, signal) =>
				new Promise((_, reject) => signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))))
		});
		ctl.abort();
		await expect(p).rejects.toMatchObject({ name: 'AbortError' });
	});
});

describe('build view', () => {
	it('folds entries into headers, indented output, progress and the end', () => {
		let v = emptyView();
		const progress: number[] = [];
		for (const e of log) {
			v = applyEntry(v, e);
			progress.push(Number(v.progress.toFixed(2)));
		}
		expect(v.lines.map((l) => [l.kind, l.text])).toEqual([
			['phase', '[queued] building web version 1'],
			['header', '[1/3] Dockerfile:1: FROM minimal (cached)'],
			['header', '[2/3] Dockerfile:2: COPY hello.txt /srv/'],
			['header', '[3/3] Dockerfile:3: RUN echo hi'],
			['output', 'hi'],
			['phase', '[image] writing the template image'],
			['phase', '[done] built web in 3s (1 of 3 steps cached)']
		]);
		// queued 0; step 1 cached: done; step 2 running: 1 done; step 3 running: 2 done; image: all.
		expect(progress).toEqual([0, 0.33, 0.33, 0.67, 0.67, 1, 1]);
		expect(v).toMatchObject({ step: 3, steps: 3, cachedSteps: 1, ended: true, failed: false });
		expect(progressText(v)).toBe('step 3/3 (1 cached)');
	});

	it('keeps the header a cached step already names, and marks a failure', () => {
		let v = applyEntry(emptyView(), entry(0, 'step', 'Dockerfile:2: RUN x (cached)', { step: 2, steps: 4, cached: true }));
		expect(v.lines[0]?.text).toBe('[2/4] Dockerfile:2: RUN x (cached)');
		v = applyEntry(v, entry(1, 'step', 'Dockerfile:3: RUN false', { step: 3, steps: 4 }));
		v = applyEntry(v, entry(2, 'error', 'Dockerfile:3: RUN false: exit status 1'));
		expect(v).toMatchObject({ ended: true, failed: true, phase: 'error' });
		expect(v.lines[2]).toMatchObject({ kind: 'error', text: '[error] Dockerfile:3: RUN false: exit status 1' });
		expect(v.progress).toBeCloseTo(0.5);
		expect(progressText(emptyView())).toBe('queued');
	});
});

describe('build form helpers', () => {
	it('encodes registry logins as docker does, and skips empty rows', () => {
		const h = registryAuthHeader([
			{ host: 'ghcr.io', username: 'me', password: 'pässword' },
			{ host: ' ', username: '', password: '' }
		]);
		const json = new TextDecoder().decode(Uint8Array.from(atob(h!), (c) => c.charCodeAt(0)));
		expect(JSON.parse(json)).toEqual({ 'ghcr.io': { username: 'me', password: 'pässword' } });
		expect(registryAuthHeader([])).toBeUndefined();
		expect(() => registryAuthHeader([{ host: 'ghcr.io', username: 'me', password: '' }])).toThrow(/password/);
	});

	it('parses build args', () => {
		expect(parseBuildArgs('A=1\n\n# c\n B=x=y ')).toEqual(['A=1', 'B=x=y']);
		expect(() => parseBuildArgs('=1')).toThrow(/KEY=value/);
	});
});
