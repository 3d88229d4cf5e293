import { describe, expect, it } from 'vitest';
import { Api, ApiError, CSRF_HEADER, KEY_STORAGE, TEAM_HEADER, describeError, errorFrom, registerCommand } from './api';

interface Call {
	url: string;
	init: RequestInit;
}

/** A fetch that records calls and answers from a script. */
function fakeFetch(answer: (url: string, init: RequestInit) => Response | Promise<Response>) {
	const calls: Call[] = [];
	const f = (async (input: RequestInfo | URL, init: RequestInit = {}) => {
		const url = String(input);
		calls.push({ url, init });
		return answer(url, init);
	}) as typeof fetch;
	return { f, calls };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
	return new Response(status === 204 ? null : JSON.stringify(body), {
		status,
		headers: { 'Content-Type': 'application/json', ...headers }
	});
}

function memStorage() {
	const m = new Map<string, string>();
	return {
		m,
		getItem: (k: string) => m.get(k) ?? null,
		setItem: (k: string, v: string) => void m.set(k, v),
		removeItem: (k: string) => void m.delete(k)
	};
}

const headersOf = (c: Call) => (c.init.headers ?? {}) as Record<string, string>;
const validKey = 'wrn_' + '0123456789abcdef'.repeat(2);
const me = { team: { id: 't1', name: 'T', created_at: '' }, teams: [], role: 'owner', platform_admin: false };

describe('errors', () => {
	it('maps the API error body to an ApiError with code, message and Retry-After', async () => {
		const e = await errorFrom(
			json(429, { error: { code: 'rate_limited', message: 'too many requests: retry in 3 s' } }, { 'Retry-After': '3' })
		);
		expect(e).toBeInstanceOf(ApiError);
		expect(e.status).toBe(429);
		expect(e.code).toBe('rate_limited');
		expect(e.retryAfter).toBe(3);
		expect(describeError(e)).toBe('Too many requests. Too many requests: retry in 3 s. Try again in 3 s.');
	});
	it('survives a body that is not JSON', async () => {
		const e = await errorFrom(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }));
		expect(e.code).toBe('http_502');
		expect(describeError(e)).toContain('502');
	});
	it('says in words what each code means', () => {
		expect(describeError(new ApiError(404, 'not_found', 'sandbox "x" not found'))).toBe(
			'It does not exist (or belongs to another team). Sandbox "x" not found.'
		);
		expect(describeError(new ApiError(429, 'quota_exceeded', 'team limit of 2 sandboxes reached'))).toContain(
			"Your team's quota does not allow it."
		);
		expect(describeError(new ApiError(0, 'network', 'Failed to fetch'))).toContain('Cannot reach the Wrenn server');
	});
	it('turns a failed fetch into a network ApiError', async () => {
		const { f } = fakeFetch(() => {
			throw new TypeError('Failed to fetch');
		});
		const api = new Api({ fetch: f });
		await expect(api.me()).rejects.toMatchObject({ status: 0, code: 'network' });
	});
	it('throws the ApiError of an error answer', async () => {
		const { f } = fakeFetch(() => json(409, { error: { code: 'failed_precondition', message: 'sandbox is paused' } }));
		const api = new Api({ fetch: f });
		await expect(api.pauseSandbox('s1')).rejects.toMatchObject({ status: 409, code: 'failed_precondition' });
	});
});

describe('cookie sessions', () => {
	it('logs in through /v1/auth/session and sends the CSRF header only on unsafe methods', async () => {
		const cookies: string[] = [];
		const { f, calls } = fakeFetch((url, init) => {
			if (url === '/v1/auth/session') return json(200, { expires_at: 'x', user: { id: 'u' }, team: { id: 'team-1' } });
			if (init.method === 'GET') return json(200, { sandboxes: [] });
			return json(201, { id: 's1' });
		});
		const api = new Api({ fetch: f, setCookie: (c) => cookies.push(c) });
		await api.login('a@example.com', 'secret-password');
		expect(calls[0]!.init.method).toBe('POST');
		expect(calls[0]!.init.credentials).toBe('same-origin');
		expect(JSON.parse(String(calls[0]!.init.body))).toEqual({ email: 'a@example.com', password: 'secret-password' });
		expect(api.auth).toEqual({ kind: 'cookie' });
		expect(cookies.at(-1)).toBe('wrenn_team=team-1; Path=/; SameSite=Strict');

		await api.listSandboxes();
		const get = calls[1]!;
		expect(headersOf(get)[CSRF_HEADER]).toBeUndefined();
		expect(headersOf(get)[TEAM_HEADER]).toBe('team-1');
		expect(headersOf(get)['X-API-Key']).toBeUndefined();

		await api.createSandbox({ template: 'minimal' });
		const post = calls[2]!;
		expect(headersOf(post)[CSRF_HEADER]).toBe('1');
		expect(headersOf(post)['Idempotency-Key']).toMatch(/^[0-9a-f-]{36}$/);
		expect(post.init.credentials).toBe('same-origin');
	});
	it('logout revokes on the server and forgets the team', async () => {
		const cookies: string[] = [];
		const { f, calls } = fakeFetch((url) =>
			url === '/v1/auth/session' && calls.length === 1 ? json(200, { user: {}, team: { id: 't' } }) : json(204, null)
		);
		const api = new Api({ fetch: f, setCookie: (c) => cookies.push(c) });
		await api.login('a@example.com', 'pw');
		await api.logout();
		expect(calls[1]!.init.method).toBe('DELETE');
		expect(calls[1]!.url).toBe('/v1/auth/session');
		expect(headersOf(calls[1]!)[CSRF_HEADER]).toBe('1');
		expect(api.auth.kind).toBe('none');
		expect(cookies.at(-1)).toContain('Max-Age=0');
	});
	it('a failed login leaves the client logged out', async () => {
		const { f } = fakeFetch(() => json(401, { error: { code: 'unauthenticated', message: 'wrong email or password' } }));
		const api = new Api({ fetch: f });
		await expect(api.login('a@example.com', 'nope')).rejects.toMatchObject({ code: 'unauthenticated' });
		expect(api.auth.kind).toBe('none');
	});
});

describe('API keys', () => {
	it('sends X-API-Key, never the CSRF or team header, and stores the key only when asked', async () => {
		const storage = memStorage();
		const { f, calls } = fakeFetch(() => json(200, me));
		const api = new Api({ fetch: f, storage });
		await api.useKey(validKey, false);
		expect(headersOf(calls[0]!)['X-API-Key']).toBe(validKey);
		expect(storage.m.size).toBe(0);

		await api.useKey(validKey, true);
		expect([...storage.m.entries()]).toEqual([[KEY_STORAGE, validKey]]);
		await api.killSandbox('s1').catch(() => {});
		const del = calls.at(-1)!;
		expect(headersOf(del)['X-API-Key']).toBe(validKey);
		expect(headersOf(del)[CSRF_HEADER]).toBeUndefined();
		expect(headersOf(del)[TEAM_HEADER]).toBeUndefined();
	});
	it('a remembered key is used on the next visit and forgotten on logout', async () => {
		const storage = memStorage();
		storage.setItem(KEY_STORAGE, validKey);
		const { f, calls } = fakeFetch(() => json(200, me));
		const api = new Api({ fetch: f, storage });
		expect(api.auth).toEqual({ kind: 'key', key: validKey });
		await api.logout();
		expect(storage.m.size).toBe(0);
		// A key session has nothing to revoke on the server.
		expect(calls.length).toBe(0);
	});
	it('refuses something that is not a key before sending it anywhere', async () => {
		const storage = memStorage();
		const { f, calls } = fakeFetch(() => json(200, me));
		const api = new Api({ fetch: f, storage });
		await expect(api.useKey('hunter2', true)).rejects.toMatchObject({ code: 'invalid_argument' });
		expect(calls.length).toBe(0);
		expect(storage.m.size).toBe(0);
	});
	it('a WebSocket carries the key in a subprotocol; a cookie session needs none', async () => {
		const storage = memStorage();
		const { f } = fakeFetch(() => json(200, me));
		const api = new Api({ fetch: f, storage });
		expect(api.wsProtocols()).toEqual([]);
		await api.useKey(validKey, false);
		const [proto, bearer] = api.wsProtocols();
		expect(proto).toBe('wrenn.v1');
		const enc = bearer!.slice('wrenn.bearer.'.length);
		expect(enc).toMatch(/^[A-Za-z0-9_-]+$/);
		expect(atob(enc.replace(/-/g, '+').replace(/_/g, '/'))).toBe(validKey);
	});
	it('a rejected key is neither kept nor stored', async () => {
		const storage = memStorage();
		const { f } = fakeFetch(() => json(401, { error: { code: 'unauthenticated', message: 'invalid API key' } }));
		const api = new Api({ fetch: f, storage });
		await expect(api.useKey(validKey, true)).rejects.toMatchObject({ status: 401 });
		expect(api.auth.kind).toBe('none');
		expect(storage.m.size).toBe(0);
	});
});

describe('requests', () => {
	it('builds query strings, repeating arrays and skipping empty values', async () => {
		const { f, calls } = fakeFetch(() => json(200, { sandboxes: [] }));
		const api = new Api({ fetch: f });
		await api.listSandboxes({ state: 'running,paused', metadata: ['a=1', 'b=2'] });
		expect(calls[0]!.url).toBe('/v1/sandboxes?state=running%2Cpaused&metadata=a%3D1&metadata=b%3D2&limit=500');
	});
	it('follows list cursors to the end', async () => {
		const { f, calls } = fakeFetch((url) =>
			url.includes('cursor=c1') ? json(200, { sandboxes: [{ id: 'b' }] }) : json(200, { sandboxes: [{ id: 'a' }], next_cursor: 'c1' })
		);
		const api = new Api({ fetch: f });
		const all = await api.listSandboxes();
		expect(all.map((s) => s.id)).toEqual(['a', 'b']);
		expect(calls.length).toBe(2);
	});
	it('escapes ids and paths', async () => {
		const { f, calls } = fakeFetch(() => json(200, { entries: [] }));
		const api = new Api({ fetch: f });
		await api.listFiles('a/b', '/home/user/my file&x');
		expect(calls[0]!.url).toBe('/v1/sandboxes/a%2Fb/files/list?path=%2Fhome%2Fuser%2Fmy+file%26x');
	});
	it('makes terminal URLs on the same origin with ws or wss', () => {
		const api = new Api();
		expect(api.ptyURL('s1', 80, 24, 'https://wrenn.example')).toBe('wss://wrenn.example/v1/sandboxes/s1/pty?cols=80&rows=24');
		expect(api.ptyURL('s1', 100, 30, 'http://127.0.0.1:8000')).toBe('ws://127.0.0.1:8000/v1/sandboxes/s1/pty?cols=100&rows=30');
	});
	it('reads 204 as nothing and text as text', async () => {
		let n = 0;
		const { f } = fakeFetch(() =>
			n++ === 0 ? json(204, null) : new Response('console text', { headers: { 'Content-Type': 'text/plain' } })
		);
		const api = new Api({ fetch: f });
		expect(await api.revokeKey('k')).toBeUndefined();
		expect(await api.logs('s1')).toBe('console text');
	});
});

it('prints the exact host registration command', () => {
	expect(registerCommand('https://cp.example', 'wrr_abc.def', '203.0.113.5:50051')).toBe(
		'WRENN_CP_URL=https://cp.example wrenn-agent --register wrr_abc.def --address 203.0.113.5:50051'
	);
});

it('tells the session when a logged-in request answers 401', async () => {
	const seen: string[] = [];
	const { f } = fakeFetch(() => json(401, { error: { code: 'unauthenticated', message: 'session expired: log in again' } }));
	const api = new Api({ fetch: f, onUnauthenticated: (e) => seen.push(e.message) });
	await expect(api.me()).rejects.toMatchObject({ status: 401 });
	expect(seen).toEqual([]); // not logged in: nothing ended
	api.auth = { kind: 'cookie' };
	await expect(api.me()).rejects.toMatchObject({ status: 401 });
	expect(seen).toEqual(['session expired: log in again']);
});

it('signup logs in with a cookie and never keeps the token the signup answer carries', async () => {
	const storage = memStorage();
	const { f, calls } = fakeFetch((url) =>
		url === '/v1/auth/signup'
			? json(201, { token: 'eyJ.secret.jwt', user: { id: 'u' }, team: { id: 't' } })
			: json(200, { user: { id: 'u' }, team: { id: 't' } })
	);
	const api = new Api({ fetch: f, storage });
	const s = await api.signup({ email: 'n@example.com', password: 'long password', invite_token: 'wri_x' });
	expect(calls.map((c) => c.url)).toEqual(['/v1/auth/signup', '/v1/auth/session']);
	expect(JSON.parse(String(calls[0]!.init.body))).toMatchObject({ invite_token: 'wri_x' });
	expect(api.auth).toEqual({ kind: 'cookie' });
	expect(JSON.stringify(s)).not.toContain('eyJ');
	expect(JSON.stringify(api)).not.toContain('eyJ');
	expect(storage.m.size).toBe(0);
});
