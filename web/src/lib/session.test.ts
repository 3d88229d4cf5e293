import { get } from 'svelte/store';
import { describe, expect, it } from 'vitest';
import { Api, KEY_STORAGE } from './api';
import { createSession } from './session';

function api(answer: (url: string, init: RequestInit) => Response, stored?: string) {
	const m = new Map<string, string>();
	if (stored) m.set(KEY_STORAGE, stored);
	const calls: { url: string; init: RequestInit }[] = [];
	const a = new Api({
		fetch: (async (u: RequestInfo | URL, init: RequestInit = {}) => {
			calls.push({ url: String(u), init });
			return answer(String(u), init);
		}) as typeof fetch,
		storage: { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v), removeItem: (k) => void m.delete(k) }
	});
	return { a, calls, m };
}
const ok = (b: unknown) => new Response(JSON.stringify(b), { status: 200, headers: { 'Content-Type': 'application/json' } });
const unauth = () =>
	new Response(JSON.stringify({ error: { code: 'unauthenticated', message: 'credentials required' } }), { status: 401 });
const team = (id: string) => ({ id, name: id, created_at: '' });
const me = (id: string) => ({ team: team(id), teams: [team('t1'), team('t2')], role: 'owner', platform_admin: false });

describe('session', () => {
	it('starts loading, and restore finds a cookie session', async () => {
		const { a } = api(() => ok(me('t1')));
		const s = createSession(a);
		expect(get(s)).toEqual({ status: 'loading' });
		await s.restore();
		const st = get(s);
		expect(st.status).toBe('authenticated');
		expect(st.status === 'authenticated' && st.via).toBe('cookie');
		expect(a.team).toBe('t1');
	});
	it('restore without a cookie is anonymous without an error to show', async () => {
		const { a } = api(unauth);
		const s = createSession(a);
		await s.restore();
		expect(get(s)).toEqual({ status: 'anonymous', reason: undefined });
		expect(a.auth.kind).toBe('none');
	});
	it('restore prefers a remembered key', async () => {
		const key = 'wrn_' + 'a'.repeat(32);
		const { a, calls } = api(() => ok(me('t1')), key);
		const s = createSession(a);
		await s.restore();
		expect((calls[0]!.init.headers as Record<string, string>)['X-API-Key']).toBe(key);
		const st = get(s);
		expect(st.status === 'authenticated' && st.via).toBe('key');
	});
	it('switching team sends the new team and rolls back when refused', async () => {
		let refuse = false;
		const { a, calls } = api((_u, init) => {
			const t = (init.headers as Record<string, string>)['X-Wrenn-Team'] ?? 't1';
			if (refuse) return new Response(JSON.stringify({ error: { code: 'not_found', message: 'team not found' } }), { status: 404 });
			return ok(me(t));
		});
		const s = createSession(a);
		await s.restore();
		await s.switchTeam('t2');
		let st = get(s);
		expect(st.status === 'authenticated' && st.me.team.id).toBe('t2');
		expect((calls.at(-1)!.init.headers as Record<string, string>)['X-Wrenn-Team']).toBe('t2');
		refuse = true;
		await expect(s.switchTeam('t3')).rejects.toMatchObject({ status: 404 });
		expect(a.team).toBe('t2');
		st = get(s);
		expect(st.status === 'authenticated' && st.me.team.id).toBe('t2');
	});
	it('logout ends anonymous even when the server cannot be reached', async () => {
		let down = false;
		const { a } = api(() => {
			if (down) throw new TypeError('Failed to fetch');
			return ok(me('t1'));
		});
		const s = createSession(a);
		await s.restore();
		down = true;
		await expect(s.logout()).rejects.toMatchObject({ code: 'network' });
		expect(get(s).status).toBe('anonymous');
		expect(a.auth.kind).toBe('none');
	});
	it('expired shows the reason on the login page', () => {
		const { a } = api(() => ok(me('t1')));
		const s = createSession(a);
		s.expired('Your session ended.');
		expect(get(s)).toEqual({ status: 'anonymous', reason: 'Your session ended.' });
	});
});
