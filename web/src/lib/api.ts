// The dashboard's client of the Wrenn REST API (api/openapi.yaml).
//
// Two ways to be authenticated:
//   - a cookie session (POST /v1/auth/session): the token lives in an
//     HttpOnly cookie the page never sees; every unsafe request carries
//     the X-Wrenn-CSRF header, which the server requires when the cookie
//     authenticates;
//   - a pasted API key, sent as X-API-Key. Only this key, and only when
//     the user asks to be remembered, is written to localStorage.
// Nothing else this client handles is ever stored by it.

import type {
	APIKey,
	AuditEntry,
	CookieSession,
	CreatedAPIKey,
	CreatedHost,
	CreatedInvite,
	Invite,
	Role,
	CreateSandboxRequest,
	FileInfo,
	Host,
	Me,
	Member,
	NetworkPolicy,
	Sandbox,
	SandboxMetrics,
	Template,
	TemplateBuild
} from './types';

export const CSRF_HEADER = 'X-Wrenn-CSRF';
export const TEAM_HEADER = 'X-Wrenn-Team';
export const TEAM_COOKIE = 'wrenn_team';
/** The localStorage entry of a remembered API key (the only one used). */
export const KEY_STORAGE = 'wrenn.apiKey';

/** The audit list's server-side filters; empty ones are not sent. */
export interface AuditFilters {
	actor_type?: string;
	actor_id?: string;
	resource_type?: string;
	resource_id?: string;
	action?: string;
	outcome?: string;
	/** RFC 3339 times: since is inclusive, until exclusive. */
	since?: string;
	until?: string;
}

export type Auth = { kind: 'none' } | { kind: 'cookie' } | { kind: 'key'; key: string };

/** An error answer of the API, or a failure to reach it (status 0). */
export class ApiError extends Error {
	constructor(
		readonly status: number,
		readonly code: string,
		message: string,
		readonly retryAfter?: number
	) {
		super(message);
		this.name = 'ApiError';
	}
}

// Words for a person, by the API's machine-readable code. The server's own
// message follows when it adds something (it names the field or the state).
const codeWords: Record<string, string> = {
	unauthenticated: 'You are not logged in, or your session has ended.',
	permission_denied: 'You are not allowed to do that.',
	not_found: 'It does not exist (or belongs to another team).',
	already_exists: 'That already exists.',
	invalid_argument: 'Something in the request is not valid.',
	failed_precondition: 'That cannot be done in the current state.',
	resource_exhausted: 'There is no room for it on any host right now.',
	quota_exceeded: "Your team's quota does not allow it.",
	rate_limited: 'Too many requests.',
	payload_too_large: 'That is too large.',
	request_timeout: 'The upload was too slow.',
	unavailable: 'The service is temporarily unavailable.',
	deadline_exceeded: 'It took too long.',
	idempotency_key_reused: 'This request conflicts with an earlier one.',
	internal: 'Something went wrong on the server.',
	network: 'Cannot reach the Wrenn server.'
};

/** A sentence a person can act on, for any error. */
export function describeError(err: unknown): string {
	if (err instanceof ApiError) {
		const words = codeWords[err.code] ?? `The server answered ${err.status}.`;
		let msg = words;
		if (err.message && err.message !== err.code) msg += ` ${capitalize(err.message)}.`;
		if (err.retryAfter) msg += ` Try again in ${err.retryAfter} s.`;
		return msg.replace(/\.\.$/, '.');
	}
	if (err instanceof DOMException && err.name === 'AbortError') return 'Cancelled.';
	if (err instanceof Error) return err.message;
	return String(err);
}

function capitalize(s: string): string {
	return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Parses an error response into an ApiError. */
export async function errorFrom(resp: Response): Promise<ApiError> {
	const retry = Number(resp.headers.get('Retry-After')) || undefined;
	let code = `http_${resp.status}`;
	let message = resp.statusText;
	try {
		const body = (await resp.json()) as { error?: { code?: string; message?: string } };
		if (body.error?.code) code = body.error.code;
		if (body.error?.message) message = body.error.message;
	} catch {
		// Not JSON (a proxy in between): the status says enough.
	}
	return new ApiError(resp.status, code, message, retry);
}

export type Query = Record<string, string | number | boolean | string[] | undefined>;

export interface RequestOptions {
	query?: Query;
	json?: unknown;
	body?: BodyInit;
	headers?: Record<string, string>;
	signal?: AbortSignal;
}

export interface ApiOptions {
	fetch?: typeof fetch;
	/** Origin of the API; '' is the page's own. */
	base?: string;
	/** Where a remembered API key lives; null: nowhere (tests, no DOM). */
	storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
	/** Sets the team cookie (document.cookie in the browser). */
	setCookie?: (cookie: string) => void;
	/** Called when a logged-in request answers 401 (the session ended). */
	onUnauthenticated?: (err: ApiError) => void;
}

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

export class Api {
	auth: Auth = { kind: 'none' };
	team: string | null = null;
	private readonly fetchImpl: typeof fetch;
	private readonly base: string;
	private readonly storage: ApiOptions['storage'];
	private readonly setCookie: (c: string) => void;
	onUnauthenticated: (err: ApiError) => void;

	constructor(opts: ApiOptions = {}) {
		this.fetchImpl = opts.fetch ?? ((...a) => fetch(...a));
		this.base = opts.base ?? '';
		this.storage = opts.storage ?? null;
		this.setCookie = opts.setCookie ?? (() => {});
		this.onUnauthenticated = opts.onUnauthenticated ?? (() => {});
		const remembered = this.storage?.getItem(KEY_STORAGE);
		if (remembered) this.auth = { kind: 'key', key: remembered };
	}

	/** Headers for a request with this method. */
	headers(method: string): Record<string, string> {
		const h: Record<string, string> = {};
		if (this.auth.kind === 'key') h['X-API-Key'] = this.auth.key;
		if (this.auth.kind === 'cookie' && !safeMethods.has(method.toUpperCase())) h[CSRF_HEADER] = '1';
		if (this.team && this.auth.kind === 'cookie') h[TEAM_HEADER] = this.team;
		return h;
	}

	url(path: string, query?: Query): string {
		const q = new URLSearchParams();
		for (const [k, v] of Object.entries(query ?? {})) {
			if (v === undefined || v === '') continue;
			if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
			else q.set(k, String(v));
		}
		const qs = q.toString();
		return this.base + path + (qs ? `?${qs}` : '');
	}

	async raw(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
		const headers = { ...this.headers(method), ...opts.headers };
		let body = opts.body;
		if (opts.json !== undefined) {
			headers['Content-Type'] = 'application/json';
			body = JSON.stringify(opts.json);
		}
		let resp: Response;
		try {
			resp = await this.fetchImpl(this.url(path, opts.query), {
				method,
				headers,
				body,
				signal: opts.signal,
				// The session cookie, never sent to another origin.
				credentials: 'same-origin'
			});
		} catch (e) {
			if (e instanceof DOMException && e.name === 'AbortError') throw e;
			throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
		}
		if (!resp.ok) {
			const err = await errorFrom(resp);
			if (err.status === 401 && this.auth.kind !== 'none' && !path.startsWith('/v1/auth/')) this.onUnauthenticated(err);
			throw err;
		}
		return resp;
	}

	async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
		const resp = await this.raw(method, path, opts);
		if (resp.status === 204) return undefined as T;
		const ct = resp.headers.get('Content-Type') ?? '';
		if (ct.includes('application/json')) return (await resp.json()) as T;
		return (await resp.text()) as T;
	}

	// --- authentication -------------------------------------------------

	async login(email: string, password: string): Promise<CookieSession> {
		this.auth = { kind: 'none' };
		const s = await this.request<CookieSession>('POST', '/v1/auth/session', { json: { email, password } });
		this.auth = { kind: 'cookie' };
		this.selectTeam(s.team?.id ?? null);
		return s;
	}

	/** Uses a pasted API key; remember writes it (and only it) to localStorage. */
	async useKey(key: string, remember: boolean): Promise<Me> {
		key = key.trim();
		if (!/^(wrn_[0-9a-f]{32}|e2b_[0-9a-f]{40})$/.test(key)) {
			throw new ApiError(400, 'invalid_argument', 'an API key looks like wrn_ followed by 32 hex digits');
		}
		this.auth = { kind: 'key', key };
		try {
			const me = await this.me();
			if (remember) this.storage?.setItem(KEY_STORAGE, key);
			else this.storage?.removeItem(KEY_STORAGE);
			return me;
		} catch (e) {
			this.auth = { kind: 'none' };
			throw e;
		}
	}

	/** Logs out: revokes the session on the server, forgets a stored key. */
	async logout(): Promise<void> {
		const was = this.auth;
		this.storage?.removeItem(KEY_STORAGE);
		try {
			if (was.kind === 'cookie') await this.request('DELETE', '/v1/auth/session');
		} finally {
			this.auth = { kind: 'none' };
			this.selectTeam(null);
		}
	}

	/** Acts for team id from now on (cookie sessions; a key has one team). */
	selectTeam(id: string | null): void {
		this.team = id;
		// WebSockets and download links cannot send headers: the server
		// reads the team from this cookie for cookie sessions.
		this.setCookie(
			id
				? `${TEAM_COOKIE}=${encodeURIComponent(id)}; Path=/; SameSite=Strict`
				: `${TEAM_COOKIE}=; Path=/; Max-Age=0; SameSite=Strict`
		);
	}

	me(): Promise<Me> {
		return this.request<Me>('GET', '/v1/me');
	}

	// --- sandboxes ------------------------------------------------------

	async listSandboxes(q: { state?: string; metadata?: string[] } = {}, signal?: AbortSignal): Promise<Sandbox[]> {
		const out: Sandbox[] = [];
		let cursor: string | undefined;
		do {
			const page = await this.request<{ sandboxes: Sandbox[]; next_cursor?: string }>('GET', '/v1/sandboxes', {
				query: { state: q.state, metadata: q.metadata, cursor, limit: 500 },
				signal
			});
			out.push(...page.sandboxes);
			cursor = page.next_cursor;
		} while (cursor);
		return out;
	}
	getSandbox(id: string, signal?: AbortSignal): Promise<Sandbox> {
		return this.request('GET', `/v1/sandboxes/${enc(id)}`, { signal });
	}
	createSandbox(req: CreateSandboxRequest): Promise<Sandbox> {
		return this.request('POST', '/v1/sandboxes', { json: req, headers: { 'Idempotency-Key': newKey() } });
	}
	killSandbox(id: string): Promise<void> {
		return this.request('DELETE', `/v1/sandboxes/${enc(id)}`);
	}
	pauseSandbox(id: string, keepMemory = true): Promise<Sandbox> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/pause`, { json: { keep_memory: keepMemory } });
	}
	/** Writes a paused or running sandbox's memory to disk and frees its RAM. */
	hibernateSandbox(id: string): Promise<Sandbox> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/hibernate`);
	}
	resumeSandbox(id: string): Promise<Sandbox> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/resume`);
	}
	forkSandbox(id: string, count: number): Promise<{ sandboxes: Sandbox[] }> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/fork`, {
			json: { count },
			headers: { 'Idempotency-Key': newKey() }
		});
	}
	snapshotSandbox(id: string, name: string): Promise<Template> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/snapshot`, {
			json: { name },
			headers: { 'Idempotency-Key': newKey() }
		});
	}
	setTimeout(id: string, timeoutSec: number, onTimeout?: 'kill' | 'pause'): Promise<Sandbox> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/timeout`, {
			json: { timeout_sec: timeoutSec, on_timeout: onTimeout }
		});
	}
	/** Replaces the sandbox's egress policy while it runs. */
	setNetwork(id: string, policy: NetworkPolicy): Promise<Sandbox> {
		return this.request('PUT', `/v1/sandboxes/${enc(id)}/network`, { json: policy });
	}
	metrics(id: string, signal?: AbortSignal): Promise<SandboxMetrics> {
		return this.request('GET', `/v1/sandboxes/${enc(id)}/metrics`, { signal });
	}
	logs(id: string, tailBytes = 65536): Promise<string> {
		return this.request('GET', `/v1/sandboxes/${enc(id)}/logs`, { query: { tail_bytes: tailBytes } });
	}
	/**
	 * The WebSocket subprotocols that carry a pasted API key (a browser
	 * cannot set headers on a WebSocket): wrenn.v1, which the server
	 * selects, and wrenn.bearer.<base64url key>. A cookie session needs none.
	 */
	wsProtocols(): string[] {
		if (this.auth.kind !== 'key') return [];
		const b64 = btoa(this.auth.key).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
		return ['wrenn.v1', 'wrenn.bearer.' + b64];
	}
	/** The terminal's WebSocket URL (open it with wsProtocols()). */
	ptyURL(id: string, cols: number, rows: number, origin: string): string {
		const u = new URL(this.url(`/v1/sandboxes/${enc(id)}/pty`, { cols, rows }), origin);
		u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
		return u.toString();
	}
	/** A guest port through the proxy (public ports, or with a login). */
	portURL(id: string, port: number): string {
		return this.url(`/v1/sandboxes/${enc(id)}/ports/${port}/`);
	}

	// --- files ----------------------------------------------------------

	async listFiles(id: string, path: string): Promise<FileInfo[]> {
		const r = await this.request<{ entries: FileInfo[] }>('GET', `/v1/sandboxes/${enc(id)}/files/list`, {
			query: { path }
		});
		return r.entries;
	}
	async readText(id: string, path: string, maxBytes = 1 << 20): Promise<string> {
		const resp = await this.raw('GET', `/v1/sandboxes/${enc(id)}/files`, { query: { path } });
		const buf = await resp.arrayBuffer();
		if (buf.byteLength > maxBytes) throw new Error(`the file is ${buf.byteLength} bytes: download it instead`);
		return new TextDecoder('utf-8', { fatal: false }).decode(buf);
	}
	async readBlob(id: string, path: string): Promise<Blob> {
		const resp = await this.raw('GET', `/v1/sandboxes/${enc(id)}/files`, { query: { path } });
		return resp.blob();
	}
	fileURL(id: string, path: string): string {
		return this.url(`/v1/sandboxes/${enc(id)}/files`, { path });
	}
	/** Uploads with progress (XMLHttpRequest: fetch reports no upload progress). */
	upload(
		id: string,
		path: string,
		file: Blob,
		onProgress: (loaded: number, total: number) => void,
		signal?: AbortSignal
	): Promise<FileInfo> {
		return this.sendWithProgress('PUT', this.url(`/v1/sandboxes/${enc(id)}/files`, { path }), file, {
			headers: { 'Content-Type': 'application/octet-stream' },
			onProgress,
			signal
		});
	}
	/** Sends a body with upload progress and parses the JSON answer. */
	private sendWithProgress<T>(
		method: string,
		url: string,
		body: Blob,
		o: { headers: Record<string, string>; onProgress: (loaded: number, total: number) => void; signal?: AbortSignal }
	): Promise<T> {
		return new Promise((resolve, reject) => {
			const xhr = new XMLHttpRequest();
			xhr.open(method, url);
			for (const [k, v] of Object.entries({ ...this.headers(method), ...o.headers })) xhr.setRequestHeader(k, v);
			xhr.upload.onprogress = (e) => o.onProgress(e.loaded, e.lengthComputable ? e.total : body.size);
			xhr.onload = () => {
				const resp = new Response(xhr.responseText, {
					status: xhr.status,
					headers: { 'Content-Type': xhr.getResponseHeader('Content-Type') ?? '' }
				});
				if (resp.ok) resolve(resp.json() as Promise<T>);
				else errorFrom(resp).then(reject, reject);
			};
			xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload was interrupted'));
			xhr.onabort = () => reject(new DOMException('upload cancelled', 'AbortError'));
			o.signal?.addEventListener('abort', () => xhr.abort());
			xhr.send(body);
		});
	}
	mkdir(id: string, path: string): Promise<FileInfo> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/files/mkdir`, { json: { path } });
	}
	move(id: string, from: string, to: string): Promise<FileInfo> {
		return this.request('POST', `/v1/sandboxes/${enc(id)}/files/move`, { json: { from, to } });
	}
	remove(id: string, path: string): Promise<void> {
		return this.request('DELETE', `/v1/sandboxes/${enc(id)}/files`, { query: { path } });
	}

	// --- team -----------------------------------------------------------

	async listKeys(): Promise<APIKey[]> {
		return (await this.request<{ api_keys: APIKey[] }>('GET', '/v1/api-keys')).api_keys;
	}
	createKey(name: string): Promise<CreatedAPIKey> {
		return this.request('POST', '/v1/api-keys', { json: { name } });
	}
	revokeKey(id: string): Promise<void> {
		return this.request('DELETE', `/v1/api-keys/${enc(id)}`);
	}
	async listMembers(team: string): Promise<Member[]> {
		return (await this.request<{ members: Member[] }>('GET', `/v1/teams/${enc(team)}/members`)).members;
	}
	addMember(team: string, email: string, role: Role): Promise<Member> {
		return this.request('POST', `/v1/teams/${enc(team)}/members`, { json: { email, role } });
	}
	setRole(team: string, user: string, role: Role): Promise<Member> {
		return this.request('PATCH', `/v1/teams/${enc(team)}/members/${enc(user)}`, { json: { role } });
	}
	removeMember(team: string, user: string): Promise<void> {
		return this.request('DELETE', `/v1/teams/${enc(team)}/members/${enc(user)}`);
	}
	async listInvites(team: string): Promise<Invite[]> {
		return (await this.request<{ invites: Invite[] }>('GET', `/v1/teams/${enc(team)}/invites`)).invites;
	}
	createInvite(team: string, email: string, role: Role): Promise<CreatedInvite> {
		return this.request('POST', `/v1/teams/${enc(team)}/invites`, { json: { email, role } });
	}
	deleteInvite(team: string, id: string): Promise<void> {
		return this.request('DELETE', `/v1/teams/${enc(team)}/invites/${enc(id)}`);
	}
	/**
	 * Signs up, then logs in with a cookie: the session token of the signup
	 * answer is dropped unread, so the page never holds one.
	 */
	async signup(req: { email: string; password: string; name?: string; team_name?: string; invite_token?: string }): Promise<CookieSession> {
		await this.request('POST', '/v1/auth/signup', { json: req });
		return this.login(req.email, req.password);
	}
	/** A page of the audit log, filtered on the server (send the same filters with the cursor). */
	auditLog(cursor?: string, limit = 50, filters: AuditFilters = {}): Promise<{ entries: AuditEntry[]; next_cursor?: string }> {
		return this.request('GET', '/v1/audit-logs', { query: { ...filters, cursor, limit } });
	}

	// --- hosts and templates -------------------------------------------

	async listHosts(): Promise<Host[]> {
		return (await this.request<{ hosts: Host[] }>('GET', '/v1/hosts')).hosts;
	}
	createHost(type: 'regular' | 'byoc'): Promise<CreatedHost> {
		return this.request('POST', '/v1/hosts', { json: { type } });
	}
	regenerateHostToken(id: string): Promise<CreatedHost> {
		return this.request('POST', `/v1/hosts/${enc(id)}/token`);
	}
	deleteHost(id: string): Promise<void> {
		return this.request('DELETE', `/v1/hosts/${enc(id)}`);
	}
	async listTemplates(): Promise<Template[]> {
		return (await this.request<{ templates: Template[] }>('GET', '/v1/templates')).templates;
	}
	deleteTemplate(name: string): Promise<void> {
		return this.request('DELETE', `/v1/templates/${enc(name)}`);
	}
	getTemplate(name: string, signal?: AbortSignal): Promise<Template> {
		return this.request('GET', `/v1/templates/${enc(name)}`, { signal });
	}
	/**
	 * Starts a build: the body is the build context (a tar, or a tar.gz
	 * when gzip), sent with upload progress. registryAuth (X-Registry-Auth)
	 * goes on this request only: nothing keeps it.
	 */
	buildTemplate(
		req: { name: string; file?: string; buildArgs?: string[]; registryAuth?: string; gzip?: boolean },
		context: Blob,
		onProgress: (loaded: number, total: number) => void,
		signal?: AbortSignal
	): Promise<TemplateBuild> {
		const headers: Record<string, string> = { 'Content-Type': req.gzip ? 'application/gzip' : 'application/x-tar' };
		if (req.registryAuth) headers['X-Registry-Auth'] = req.registryAuth;
		const url = this.url('/v1/templates', { name: req.name, file: req.file, build_arg: req.buildArgs });
		return this.sendWithProgress('POST', url, context, { headers, onProgress, signal });
	}
	async listBuilds(name: string, signal?: AbortSignal): Promise<TemplateBuild[]> {
		return (await this.request<{ builds: TemplateBuild[] }>('GET', `/v1/templates/${enc(name)}/builds`, { signal })).builds;
	}
	getBuild(name: string, id: string, signal?: AbortSignal): Promise<TemplateBuild> {
		return this.request('GET', `/v1/templates/${enc(name)}/builds/${enc(id)}`, { signal });
	}
	cancelBuild(name: string, id: string): Promise<void> {
		return this.request('DELETE', `/v1/templates/${enc(name)}/builds/${enc(id)}`);
	}
	/** The build's log from entry offset on, streamed until the build ends (NDJSON). */
	buildLog(name: string, id: string, offset: number, signal?: AbortSignal): Promise<Response> {
		return this.raw('GET', `/v1/templates/${enc(name)}/builds/${enc(id)}/logs`, {
			query: { offset, follow: true },
			signal
		});
	}
}

function enc(s: string): string {
	return encodeURIComponent(s);
}

/** A fresh Idempotency-Key: a retried click never makes two sandboxes. */
function newKey(): string {
	return globalThis.crypto.randomUUID();
}

/** The command that registers a host with the token (as `wrenn admin` prints it). */
export function registerCommand(apiURL: string, token: string, address = '<this host address>:50051'): string {
	return `WRENN_CP_URL=${apiURL} wrenn-agent --register ${token} --address ${address}`;
}
