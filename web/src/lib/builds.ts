// Template builds: following a build's NDJSON log across connection breaks,
// and the state the build page draws from it (pure, unit-tested).

import { ApiError } from './api';
import type { TemplateBuild, TemplateBuildLogEntry } from './types';

/** Phases after which the build writes nothing more. */
const finalPhases = new Set(['done', 'error']);

export interface FollowOptions {
	/** Opens the log from the entry with this seq on (offset=…&follow=true). */
	open: (offset: number, signal: AbortSignal) => Promise<Response>;
	onEntry: (e: TemplateBuildLogEntry) => void;
	/**
	 * Asked when a stream ends cleanly without a final entry (a proxy that
	 * closed it, or a build cancelled without one): true ends the follow.
	 */
	finished: () => Promise<boolean>;
	/** Reported as the follow goes: streaming, reconnecting (attempt n), ended. */
	onState?: (s: FollowState) => void;
	signal?: AbortSignal;
	/** Waits between reconnects, by attempt (the last repeats). */
	backoffMs?: number[];
	/** Gives up after this many failed attempts in a row. */
	maxAttempts?: number;
	sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export type FollowState =
	| { kind: 'streaming' }
	| { kind: 'reconnecting'; attempt: number; reason: string }
	| { kind: 'ended' };

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
	return new Promise((resolve, reject) => {
		const t = setTimeout(resolve, ms);
		signal.addEventListener('abort', () => {
			clearTimeout(t);
			reject(new DOMException('aborted', 'AbortError'));
		});
	});
}

/** Whether a failure is worth another try (the network, or the server busy). */
function retryable(e: unknown): boolean {
	if (e instanceof ApiError) return e.status === 0 || e.status === 429 || e.status >= 500;
	return !(e instanceof DOMException && e.name === 'AbortError');
}

/**
 * Follows a build's log to its end. Every entry is delivered once and in
 * order: on a break it reopens from the seq after the last one seen and
 * drops any entry it already delivered. Resolves when the build ended;
 * rejects on a refusal (404…), after maxAttempts breaks in a row, or when
 * aborted.
 */
export async function followBuildLog(o: FollowOptions): Promise<void> {
	const ctl = new AbortController();
	o.signal?.addEventListener('abort', () => ctl.abort());
	if (o.signal?.aborted) ctl.abort();
	const backoff = o.backoffMs ?? [500, 1000, 2000, 5000];
	const maxAttempts = o.maxAttempts ?? 20;
	const sleep = o.sleep ?? defaultSleep;
	let next = 0; // the seq of the next entry to deliver
	let attempt = 0;
	const dec = new TextDecoder();
	for (;;) {
		let sawFinal = false;
		let reason = '';
		try {
			const resp = await o.open(next, ctl.signal);
			if (!resp.body) throw new ApiError(0, 'network', 'the log answer has no body');
			o.onState?.({ kind: 'streaming' });
			const reader = resp.body.getReader();
			let buf = '';
			const take = (line: string) => {
				if (!line.trim()) return;
				const e = JSON.parse(line) as TemplateBuildLogEntry;
				if (e.seq < next) return; // already delivered before the break
				next = e.seq + 1;
				attempt = 0; // progress: the next break starts its backoff over
				if (finalPhases.has(e.phase)) sawFinal = true;
				o.onEntry(e);
			};
			for (;;) {
				const { done, value } = await reader.read();
				if (done) break;
				buf += dec.decode(value, { stream: true });
				let nl: number;
				while ((nl = buf.indexOf('\n')) >= 0) {
					take(buf.slice(0, nl));
					buf = buf.slice(nl + 1);
				}
			}
			// A last line without its newline is a cut line: read it again.
			if (sawFinal || (await o.finished())) {
				o.onState?.({ kind: 'ended' });
				return;
			}
			reason = 'the log stream ended before the build did';
		} catch (e) {
			if (ctl.signal.aborted) throw new DOMException('aborted', 'AbortError');
			if (!retryable(e)) throw e;
			reason = e instanceof Error ? e.message : String(e);
		}
		attempt++;
		if (attempt > maxAttempts) throw new ApiError(0, 'network', `lost the build log: ${reason}`);
		o.onState?.({ kind: 'reconnecting', attempt, reason });
		await sleep(backoff[Math.min(attempt - 1, backoff.length - 1)] ?? 1000, ctl.signal);
	}
}

/** One line of the log as the page draws it. */
export interface LogLine {
	seq: number;
	kind: 'header' | 'output' | 'phase' | 'error';
	text: string;
	cached?: boolean;
}

/** What the build page shows, folded from the log entries. */
export interface BuildView {
	lines: LogLine[];
	step: number;
	steps: number;
	cachedSteps: number;
	phase: TemplateBuildLogEntry['phase'] | '';
	/** 0..1: steps completed (a step counts once its successor starts or the build moves on). */
	progress: number;
	ended: boolean;
	failed: boolean;
}

export function emptyView(): BuildView {
	return { lines: [], step: 0, steps: 0, cachedSteps: 0, phase: '', progress: 0, ended: false, failed: false };
}

/**
 * Adds an entry: a step's first entry is its header "[3/7] Dockerfile:5:
 * RUN …" (with "(cached)"), its later ones its indented output, and other
 * phases "[phase] text" (as `wrenn template build` prints them).
 */
export function applyEntry(v: BuildView, e: TemplateBuildLogEntry): BuildView {
	const out: BuildView = { ...v, lines: v.lines, phase: e.phase };
	if (e.steps) out.steps = e.steps;
	let line: LogLine;
	if (e.phase === 'step' && e.step !== undefined && e.step !== v.step) {
		out.step = e.step;
		if (e.cached) out.cachedSteps = v.cachedSteps + 1;
		line = { seq: e.seq, kind: 'header', text: `[${e.step}/${out.steps || '?'}] ${e.text}`, cached: !!e.cached };
		if (e.cached && !line.text.endsWith('(cached)')) line.text += ' (cached)';
	} else if (e.phase === 'step') {
		line = { seq: e.seq, kind: 'output', text: e.text };
	} else {
		line = { seq: e.seq, kind: e.phase === 'error' ? 'error' : 'phase', text: `[${e.phase}] ${e.text}` };
	}
	out.lines = [...v.lines, line];
	if (e.phase === 'done') {
		out.ended = true;
		out.progress = 1;
	} else if (e.phase === 'error') {
		out.ended = true;
		out.failed = true;
	} else if (out.steps > 0) {
		// A running step is not done; a cached one is, and past the steps
		// (image, start) every step is.
		const done = e.phase === 'step' ? out.step - (e.cached ? 0 : 1) : e.phase === 'image' || e.phase === 'start' ? out.steps : 0;
		out.progress = Math.max(v.progress, Math.min(1, done / out.steps));
	}
	return out;
}

/** The build's progress in words: "step 3/7 (2 cached)". */
export function progressText(v: BuildView, b?: TemplateBuild): string {
	const steps = v.steps || b?.steps || 0;
	const step = v.step || b?.current_step || 0;
	const cached = Math.max(v.cachedSteps, b?.cached_steps ?? 0);
	if (!steps) return v.phase ? v.phase : 'queued';
	return `step ${step}/${steps}${cached ? ` (${cached} cached)` : ''}`;
}

/** "1 min 5 s" for a duration in seconds. */
export function duration(sec: number | undefined): string {
	if (sec === undefined || !Number.isFinite(sec)) return '—';
	const s = Math.max(0, Math.round(sec));
	if (s < 60) return `${s} s`;
	if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
	return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** The X-Registry-Auth header: base64 of {"host": {"username","password"}}. */
export function registryAuthHeader(logins: { host: string; username: string; password: string }[]): string | undefined {
	const m: Record<string, { username: string; password: string }> = {};
	for (const l of logins) {
		const host = l.host.trim();
		if (!host) continue;
		if (!l.username || !l.password) throw new Error(`the login for ${host} needs a username and a password`);
		m[host] = { username: l.username, password: l.password };
	}
	if (!Object.keys(m).length) return undefined;
	const bytes = new TextEncoder().encode(JSON.stringify(m));
	let bin = '';
	for (const b of bytes) bin += String.fromCharCode(b);
	return btoa(bin);
}

/** KEY=value lines into build_arg values; blank lines and # comments are skipped. */
export function parseBuildArgs(text: string): string[] {
	const out: string[] = [];
	for (const raw of text.split('\n')) {
		const line = raw.trim();
		if (!line || line.startsWith('#')) continue;
		const eq = line.indexOf('=');
		if (eq <= 0) throw new Error(`build argument "${line}": write it as KEY=value`);
		out.push(line);
	}
	return out;
}

export const exampleDockerfile = `FROM minimal
# Debian's packages are reachable over plain HTTP from the build.
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq \\
 && rm -rf /var/lib/apt/lists/*
WORKDIR /home/user
# Files added below are in the build context: COPY them by name.
# COPY --chown=user:user hello.txt ./
ENV GREETING=hello
`;

export const exampleWrennYaml = `# wrenn.yaml: a Dockerfile's steps plus what it cannot say.
from: minimal
steps:
  - run: echo "built on $(date)" > /home/user/built.txt
resources: {vcpus: 1, memory_mb: 512}
`;
