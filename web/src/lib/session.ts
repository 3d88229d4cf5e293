// The dashboard's session state: who is logged in, how, and for which team.

import { writable, type Readable } from 'svelte/store';
import { Api, ApiError } from './api';
import type { Me } from './types';

export type SessionState =
	| { status: 'loading' }
	| { status: 'anonymous'; reason?: string }
	| { status: 'authenticated'; via: 'cookie' | 'key'; me: Me };

export interface Session extends Readable<SessionState> {
	/** Finds out whether the browser is logged in (remembered key, or cookie). */
	restore(): Promise<void>;
	login(email: string, password: string): Promise<void>;
	signup(req: Parameters<Api['signup']>[0]): Promise<void>;
	useKey(key: string, remember: boolean): Promise<void>;
	logout(): Promise<void>;
	switchTeam(teamId: string): Promise<void>;
	/** Called when any request answers 401: the session ended elsewhere. */
	expired(reason: string): void;
}

export function createSession(api: Api): Session {
	const state = writable<SessionState>({ status: 'loading' });

	async function load(via: 'cookie' | 'key'): Promise<void> {
		const me = await api.me();
		if (via === 'cookie') api.selectTeam(me.team.id);
		state.set({ status: 'authenticated', via, me });
	}

	return {
		subscribe: state.subscribe,
		async restore() {
			// A remembered key first (the Api read it from storage), else the
			// HttpOnly cookie, which only the server can see.
			const via = api.auth.kind === 'key' ? 'key' : 'cookie';
			if (via === 'cookie') api.auth = { kind: 'cookie' };
			try {
				await load(via);
			} catch (e) {
				api.auth = { kind: 'none' };
				const reason = e instanceof ApiError && e.status === 401 ? undefined : String(e);
				state.set({ status: 'anonymous', reason });
			}
		},
		async login(email, password) {
			await api.login(email, password);
			await load('cookie');
		},
		async signup(req) {
			await api.signup(req);
			await load('cookie');
		},
		async useKey(key, remember) {
			const me = await api.useKey(key, remember);
			state.set({ status: 'authenticated', via: 'key', me });
		},
		async logout() {
			try {
				await api.logout();
			} finally {
				state.set({ status: 'anonymous' });
			}
		},
		async switchTeam(teamId) {
			const previous = api.team;
			api.selectTeam(teamId);
			try {
				await load('cookie');
			} catch (e) {
				api.selectTeam(previous);
				throw e;
			}
		},
		expired(reason) {
			api.auth = { kind: 'none' };
			state.set({ status: 'anonymous', reason });
		}
	};
}
