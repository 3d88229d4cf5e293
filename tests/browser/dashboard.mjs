// The dashboard's browser journey (run by browser_test.go against a real
// stack): Debian's chromium driven by playwright-core from web/node_modules.
//
// Environment: WRENN_URL, WRENN_ADMIN_EMAIL/PASSWORD (first team),
// WRENN_OTHER_EMAIL/PASSWORD (a second team), WRENN_SHOTS (screenshot
// directory), CHROMIUM (the browser binary).
//
// Every wait polls for a condition (Playwright's auto-waiting assertions);
// there is no fixed sleep.

import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const require = createRequire(new URL('../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const env = (k) => {
	const v = process.env[k];
	if (!v) throw new Error(`${k} is not set`);
	return v;
};
const base = env('WRENN_URL');
const shots = env('WRENN_SHOTS');
const keyForSetup = env('WRENN_ADMIN_KEY');
const bootTimeout = 240_000; // a TCG boot on a loaded 2-core machine

let step = '';
const log = (msg) => console.log(`journey: ${msg}`);
function begin(name) {
	step = name;
	log(`step: ${name}`);
}
function check(cond, what) {
	if (!cond) throw new Error(`${step}: ${what}`);
}

async function shot(page, name) {
	const file = path.join(shots, `${name}.png`);
	await page.screenshot({ path: file, fullPage: false });
	log(`screenshot ${file}`);
}

/** Watches a page for CSP violations and uncaught errors. */
function watch(page, problems) {
	page.on('console', (m) => {
		if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
	});
	page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

async function login(page, email, password) {
	await page.goto(base + '/');
	await page.waitForURL(/\/login/);
	await page.getByLabel('Email').fill(email);
	await page.getByLabel('Password').fill(password);
	await page.getByRole('button', { name: 'Log in' }).click();
	await page.getByRole('heading', { name: 'Sandboxes' }).waitFor();
}

/** Polls cond (every 500 ms, at most 2 minutes) until it holds. */
async function poll(what, cond) {
	const deadline = Date.now() + 120_000;
	while (!(await cond())) {
		if (Date.now() > deadline) throw new Error(`${step}: timed out waiting for ${what}`);
		await new Promise((r) => setTimeout(r, 500));
	}
}

async function apiKeyWorks(key) {
	const r = await fetch(base + '/v1/me', { headers: { 'X-API-Key': key } });
	return r.status;
}

const browser = await chromium.launch({
	executablePath: env('CHROMIUM'),
	headless: true,
	// As root chromium refuses its own sandbox; the test machine is the sandbox.
	args: ['--no-sandbox', '--disable-dev-shm-usage']
});
const problems = [];
try {
	const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
	const page = await ctx.newPage();
	watch(page, problems);
	page.setDefaultTimeout(60_000);

	begin('security headers');
	{
		const r = await fetch(base + '/');
		const csp = r.headers.get('content-security-policy') ?? '';
		check(csp.includes("frame-ancestors 'none'") && csp.includes("script-src 'self' 'sha256-"), `CSP ${csp}`);
		check(r.headers.get('x-content-type-options') === 'nosniff', 'nosniff');
	}

	begin('log in');
	await page.goto(base + '/');
	await page.waitForURL(/\/login/);
	await shot(page, 'login');
	await login(page, env('WRENN_ADMIN_EMAIL'), env('WRENN_ADMIN_PASSWORD'));
	check((await page.evaluate(() => localStorage.length)) === 0, 'a password login stored something in localStorage');
	const cookies = await ctx.cookies();
	const session = cookies.find((c) => c.name === 'wrenn_session');
	check(session && session.httpOnly && session.sameSite === 'Strict', `session cookie ${JSON.stringify(session)}`);
	check(!(await page.evaluate(() => document.cookie)).includes('wrenn_session'), 'the session cookie is visible to scripts');

	begin('the CSP blocks an injected inline script');
	{
		const outcome = await page.evaluate(
			() =>
				new Promise((resolve) => {
					document.addEventListener('securitypolicyviolation', (e) => resolve(`blocked by ${e.effectiveDirective}`), { once: true });
					const s = document.createElement('script');
					s.textContent = 'window.__injected = true';
					document.body.append(s);
					// A fallback answer if no violation is reported at all.
					setTimeout(() => resolve(window.__injected ? 'it ran' : 'no report'), 3000);
				})
		);
		check(outcome === 'blocked by script-src-elem' || outcome === 'blocked by script-src', `injected inline script: ${outcome}`);
		// That refusal is the one console error expected here.
		const i = problems.findIndex((p) => /inline script/i.test(p));
		if (i >= 0) problems.splice(i, 1);
	}

	begin('create a sandbox');
	await page.getByRole('link', { name: 'New sandbox' }).click();
	await page.getByLabel('Metadata').fill('owner=browser-test');
	await page.getByRole('button', { name: 'Create sandbox' }).click();
	await page.waitForURL(/\/sandbox\//, { timeout: bootTimeout });
	const id = decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
	log(`sandbox ${id}`);
	await page.getByTestId('state').filter({ hasText: 'running' }).waitFor({ timeout: bootTimeout });

	begin('terminal: echo hello');
	await page.locator('.badge', { hasText: 'connected' }).waitFor();
	await page.getByTestId('terminal').click();
	await page.keyboard.type('echo hello\n');
	// The output row is exactly "hello" (the command's own row has a prompt).
	await page.waitForFunction(
		() => [...document.querySelectorAll('.xterm-rows > div')].some((r) => r.textContent.trim() === 'hello'),
		null,
		{ timeout: 60_000 }
	);
	await shot(page, 'terminal');

	begin('terminal: reconnects by itself after a drop');
	{
		// A page of its own whose PTY WebSockets pass through Playwright, so
		// the test can drop one as a network would.
		const tp = await ctx.newPage();
		watch(tp, problems);
		const socks = [];
		await tp.routeWebSocket(/\/pty/, (ws) => {
			ws.connectToServer();
			socks.push(ws);
		});
		await tp.goto(base + `/sandbox/${encodeURIComponent(id)}`);
		const status = tp.getByTestId('terminal-status');
		await status.filter({ hasText: /^\s*connected\s*$/ }).waitFor();
		check(socks.length === 1, `${socks.length} PTY sockets before the drop`);
		await socks[0].close({ code: 4000, reason: 'dropped by the test' });
		await status.filter({ hasText: 'reconnecting' }).waitFor();
		await status.filter({ hasText: /^\s*connected\s*$/ }).waitFor({ timeout: 30_000 });
		check(socks.length === 2, `${socks.length} PTY sockets after the reconnect, want 2`);
		await tp.getByTestId('terminal').click();
		await tp.keyboard.type('echo again-$((40+2))\n');
		await tp.waitForFunction(
			() => [...document.querySelectorAll('.xterm-rows > div')].some((r) => r.textContent.trim() === 'again-42'),
			null,
			{ timeout: 60_000 }
		);
		await tp.close();
	}

	begin('upload, list, download');
	await page.getByRole('tab', { name: 'Files' }).click();
	await page.getByRole('table', { name: 'Files' }).or(page.getByText('This directory is empty')).first().waitFor();
	const bytes = randomBytes(300 * 1024);
	await page.locator('#upload').setInputFiles({ name: 'upload.bin', mimeType: 'application/octet-stream', buffer: bytes });
	const row = page.locator('tr[data-file="upload.bin"]');
	await row.waitFor();
	const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('link', { name: 'Download' }).click()]);
	const got = await readFile(await download.path());
	check(Buffer.compare(got, bytes) === 0, `downloaded ${got.length} bytes differ from the ${bytes.length} uploaded`);
	await shot(page, 'files');
	// Open a text file, make a directory, rename and delete.
	await page.locator('#upload').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello from the browser\n') });
	await page.locator('tr[data-file="notes.txt"]').getByRole('button', { name: 'notes.txt' }).click();
	await page.getByTestId('file-text').filter({ hasText: 'hello from the browser' }).waitFor();
	await page.getByLabel('New directory name').fill('made-here');
	await page.getByRole('button', { name: 'Make directory' }).click();
	await page.locator('tr[data-file="made-here"]').waitFor();
	await row.getByRole('button', { name: 'Rename' }).click();
	await page.getByLabel('New name for upload.bin').fill('renamed.bin');
	await page.locator('tr[data-file="upload.bin"] form').getByRole('button', { name: 'Rename' }).click();
	await page.locator('tr[data-file="renamed.bin"]').waitFor();
	check((await page.locator('tr[data-file="upload.bin"]').count()) === 0, 'upload.bin still listed after the rename');
	page.once('dialog', (d) => void d.accept());
	await page.locator('tr[data-file="renamed.bin"]').getByRole('button', { name: 'Delete' }).click();
	await page.locator('tr[data-file="renamed.bin"]').waitFor({ state: 'detached' });

	begin('pause, resume, hibernate, resume');
	await page.getByRole('button', { name: 'Pause' }).click();
	await page.getByTestId('state').filter({ hasText: 'paused' }).waitFor({ timeout: bootTimeout });
	await page.getByRole('button', { name: 'Resume' }).click();
	await page.getByTestId('state').filter({ hasText: 'running' }).waitFor({ timeout: bootTimeout });
	await page.getByRole('button', { name: 'Hibernate' }).click();
	await page.getByTestId('state').filter({ hasText: 'hibernated' }).waitFor({ timeout: bootTimeout });
	await page.getByRole('button', { name: 'Resume' }).click();
	await page.getByTestId('state').filter({ hasText: 'running' }).waitFor({ timeout: bootTimeout });

	begin('fork');
	await page.getByLabel('Forks').fill('1');
	await page.getByRole('button', { name: 'Fork', exact: true }).click();
	const forkLink = page.locator('.notice a.tag').first();
	await forkLink.waitFor({ timeout: bootTimeout });
	const forkId = (await forkLink.textContent()).trim();
	check(forkId && forkId !== id, `fork id ${forkId}`);
	log(`fork ${forkId}`);

	begin('snapshot as template');
	await page.getByLabel('Template name').fill('browser-tpl');
	await page.getByRole('button', { name: 'Snapshot as template' }).click();
	await page.getByText('Template browser-tpl is being made').waitFor({ timeout: bootTimeout });

	begin('metrics');
	await page.getByRole('tab', { name: 'Metrics' }).click();
	await page.getByText('CPU now:').waitFor();
	// The charts once the host has sampled a history (the page polls).
	await page.getByText('No history yet').waitFor({ state: 'detached', timeout: 60_000 });
	await shot(page, 'metrics');

	begin('settings: timeout and network policy');
	await page.getByRole('tab', { name: 'Settings' }).click();
	await page.getByLabel('Idle timeout (seconds)').fill('900');
	await page.getByRole('button', { name: 'Set timeout' }).click();
	await page.getByText('Timeout set.').waitFor();
	await page.getByLabel('Internet access').uncheck();
	await page.getByRole('button', { name: 'Apply network policy' }).click();
	await page.getByText('Network policy changed.').waitFor();
	{
		const got = await page.evaluate(async (sid) => (await fetch(`/v1/sandboxes/${encodeURIComponent(sid)}`)).json(), id);
		check(got.timeout_sec === 900 && got.network?.allow_internet === false, `sandbox after settings: ${JSON.stringify(got)}`);
	}

	begin('sandbox list');
	await page.goto(base + '/');
	await page.locator(`tr[data-sandbox="${id}"]`).waitFor();
	await page.locator(`tr[data-sandbox="${forkId}"]`).waitFor();
	// CPU and memory now, from each running sandbox's metrics.
	await page.locator(`tr[data-sandbox="${id}"] td[data-usage]`, { hasText: '%' }).waitFor({ timeout: 60_000 });
	await shot(page, 'sandboxes');
	await page.setViewportSize({ width: 390, height: 844 });
	await page.locator(`tr[data-sandbox="${id}"]`).waitFor();
	await shot(page, 'sandboxes-phone');
	await page.setViewportSize({ width: 1280, height: 800 });

	begin('templates: list and delete the snapshot');
	page.on('dialog', (d) => void d.accept());
	await page.goto(base + '/templates');
	const tpl = page.locator('tr', { hasText: 'browser-tpl' });
	// The list does not poll: reload until the host has finished it.
	await poll('the snapshot template to be ready', async () => {
		await page.goto(base + '/templates');
		await tpl.waitFor();
		return (await tpl.locator('.badge').textContent()).trim() === 'ready';
	});
	await shot(page, 'templates');
	await tpl.getByRole('button', { name: 'Delete' }).click();
	await tpl.waitFor({ state: 'detached', timeout: 60_000 });

	begin('kill the fork');
	await page.goto(base + `/sandbox/${encodeURIComponent(forkId)}`);
	await page.getByTestId('state').filter({ hasText: 'running' }).waitFor();
	await page.getByRole('button', { name: 'Kill' }).click();
	await page.waitForURL((u) => u.pathname === '/');
	await page.locator(`tr[data-sandbox="${forkId}"]`).waitFor({ state: 'detached', timeout: 60_000 });

	// After the fork is gone: the build's VM and the sandbox made from it
	// keep this run at two VMs at once.
	begin('build a template from the page');
	{
		await page.goto(base + '/templates');
		await page.getByRole('link', { name: 'Build a template' }).click();
		await page.getByLabel('Template name').fill('browser-built');
		await page.getByLabel('Recipe (Dockerfile)').fill(
			'FROM minimal\n' +
				'COPY greeting.txt /home/user/greeting.txt\n' +
				'RUN echo built-by-the-browser && cat /home/user/greeting.txt\n'
		);
		await page.locator('#addfiles').setInputFiles({ name: 'greeting.txt', mimeType: 'text/plain', buffer: Buffer.from('hello from a built template\n') });
		await page.getByRole('list', { name: 'Files in the build context' }).getByText('greeting.txt').waitFor();
		await shot(page, 'template-build-form');
		await page.getByRole('button', { name: 'Build', exact: true }).click();
		await page.waitForURL(/\/template\/browser-built\/builds\//);
		log(`build page ${page.url()}`);
		const status = page.getByTestId('build-status');
		const buildLog = page.getByTestId('build-log');
		// The log streams while it builds: the COPY step's header appears.
		await buildLog.locator('.l.k-header', { hasText: /^\[\d+\/\d+\] Dockerfile:2: COPY greeting.txt/ }).waitFor({ timeout: bootTimeout });
		await status.filter({ hasText: /ready|failed|canceled/ }).waitFor({ timeout: 2 * bootTimeout });
		const final = (await status.textContent()).trim();
		if (final !== 'ready') log(`build log:\n${await buildLog.innerText()}`);
		check(final === 'ready', `the build ended ${final}`);
		// The RUN step's output, indented under its header, and the end.
		await buildLog.locator('.l.k-output', { hasText: 'hello from a built template' }).waitFor();
		await buildLog.locator('.l.k-output', { hasText: 'built-by-the-browser' }).waitFor();
		await buildLog.locator('.l.k-phase', { hasText: '[done]' }).waitFor();
		const progress = (await page.getByTestId('build-progress').textContent()).trim();
		check(/^step (\d+)\/\1\b/.test(progress), `progress at the end: ${progress}`);
		check((await page.getByRole('progressbar', { name: 'Build progress' }).getAttribute('value')) === '100', 'the progress bar is not full');
		await shot(page, 'template-build');

		begin('create a sandbox from the built template and see the copied file');
		await page.getByRole('link', { name: 'Create a sandbox from it' }).click();
		await page.waitForURL(/\/new\?template=/);
		check((await page.getByLabel('Template', { exact: true }).inputValue()) === 'browser-built:1', `template field ${await page.getByLabel('Template', { exact: true }).inputValue()}`);
		await page.getByRole('button', { name: 'Create sandbox' }).click();
		await page.waitForURL(/\/sandbox\//, { timeout: bootTimeout });
		const builtId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
		log(`sandbox of the built template ${builtId}`);
		await page.getByTestId('state').filter({ hasText: 'running' }).waitFor({ timeout: bootTimeout });
		await page.getByRole('tab', { name: 'Files' }).click();
		const greeting = page.locator('tr[data-file="greeting.txt"]');
		await greeting.waitFor();
		await greeting.getByRole('button', { name: 'greeting.txt' }).click();
		await page.getByTestId('file-text').filter({ hasText: 'hello from a built template' }).waitFor();
		await shot(page, 'built-template-files');
		// The dialog handler of the templates step accepts the Kill confirm.
		await page.getByRole('button', { name: 'Kill' }).click();
		await page.waitForURL((u) => u.pathname === '/');

		// The template's page lists the build.
		await page.goto(base + '/template/browser-built');
		await page.getByRole('table', { name: 'Builds' }).locator('tr', { hasText: 'v1' }).locator('.badge', { hasText: 'ready' }).waitFor();
		await shot(page, 'template');
	}

	begin('switch team');
	{
		const sw = page.getByLabel('Team');
		await sw.waitFor();
		const home = await sw.inputValue();
		await sw.selectOption({ label: 'Other (member)' });
		await page.getByText('No sandboxes yet.').waitFor();
		check((await page.locator('tr[data-sandbox]').count()) === 0, "the other team's list shows this team's sandboxes");
		// The team cookie follows the switch, so links and WebSockets act
		// for the same team: this team's sandbox is not found from there.
		await page.goto(base + `/sandbox/${encodeURIComponent(id)}`);
		await page.getByText('does not exist').waitFor();
		await page.getByLabel('Team').selectOption(home);
		await page.locator(`tr[data-sandbox="${id}"]`).waitFor();
	}

	begin('members');
	await page.goto(base + '/members');
	await page.getByRole('table', { name: 'Members' }).getByText(env('WRENN_ADMIN_EMAIL')).first().waitFor();
	await shot(page, 'members');

	begin('create and revoke an API key');
	await page.goto(base + '/keys');
	await page.getByLabel('Name').fill('browser-key');
	await page.getByRole('button', { name: 'Create key' }).click();
	const key = (await page.getByTestId('new-key').textContent()).trim();
	check(/^wrn_[0-9a-f]{32}$/.test(key), `new key ${key}`);
	check((await apiKeyWorks(key)) === 200, 'the new key does not work');
	await shot(page, 'keys');
	await page.locator('tr[data-key="browser-key"]').getByRole('button', { name: 'Revoke' }).click();
	await page.locator('tr[data-key="browser-key"] .badge', { hasText: 'revoked' }).waitFor();
	check((await apiKeyWorks(key)) === 401, 'the revoked key still works');

	begin('add a BYOC host');
	await page.goto(base + '/hosts');
	await page.getByLabel('Kind').selectOption('byoc');
	await page.getByRole('button', { name: 'Add host' }).click();
	const cmd = page.getByTestId('register-command');
	await cmd.waitFor();
	const cmdText = await cmd.textContent();
	check(cmdText.includes(`WRENN_CP_URL=${new URL(base).origin} wrenn-agent --register wrr_`), `command ${cmdText}`);
	await shot(page, 'hosts');

	begin('audit log');
	await page.goto(base + '/audit');
	await page.getByRole('table', { name: 'Audit log' }).waitFor();
	// Filtered on the server: only the API key revocation of this run.
	await page.getByLabel('Resource', { exact: true }).fill('api_key');
	await page.getByLabel('Action').fill('revoke');
	await page.getByRole('button', { name: 'Apply filters' }).click();
	await poll('the filtered audit log', async () => {
		const actions = await page.locator('table[aria-label="Audit log"] tbody tr td:nth-child(3)').allTextContents();
		return actions.length > 0 && actions.every((a) => a.trim() === 'revoke');
	});
	await shot(page, 'audit');

	begin('log out');
	await page.getByRole('button', { name: 'Log out' }).click();
	await page.waitForURL(/\/login/);
	const r = await page.evaluate(async () => (await fetch('/v1/me')).status);
	check(r === 401, `after logout /v1/me answers ${r}`);
	check(session && (await fetch(base + '/v1/me', { headers: { Cookie: `wrenn_session=${session.value}` } })).status === 401,
		'the logged-out session token still works');

	begin('log in with a pasted API key');
	{
		const kctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
		const kp = await kctx.newPage();
		watch(kp, problems);
		const mk = await fetch(base + '/v1/api-keys', {
			method: 'POST',
			headers: { 'Content-Type': 'application/json', 'X-API-Key': keyForSetup },
			body: JSON.stringify({ name: 'pasted' })
		});
		check(mk.status === 201, `create a key to paste: ${mk.status}`);
		const pasted = (await mk.json()).key;
		await kp.goto(base + '/login');
		await kp.getByRole('tab', { name: 'API key' }).click();
		await kp.getByLabel('API key').fill(pasted);
		await kp.getByLabel('Remember this key in this browser').check();
		await kp.getByRole('button', { name: 'Log in' }).click();
		await kp.locator(`tr[data-sandbox="${id}"]`).waitFor();
		const stored = await kp.evaluate(() => Object.entries(localStorage));
		check(JSON.stringify(stored) === JSON.stringify([['wrenn.apiKey', pasted]]), `localStorage holds ${JSON.stringify(stored)}`);
		// Remembered: a new page of the same browser is logged in.
		await kp.reload();
		await kp.locator(`tr[data-sandbox="${id}"]`).waitFor();
		// The terminal works with a pasted key too (it rides in a
		// WebSocket subprotocol, as a browser cannot set the header).
		await kp.goto(base + `/sandbox/${encodeURIComponent(id)}`);
		await kp.locator('.badge', { hasText: 'connected' }).waitFor({ timeout: 60_000 });
		await kp.getByTestId('terminal').click();
		await kp.keyboard.type('echo key-$((6*7))\n');
		await kp.waitForFunction(
			() => [...document.querySelectorAll('.xterm-rows > div')].some((r) => r.textContent.trim() === 'key-42'),
			null,
			{ timeout: 60_000 }
		);
		await kp.getByRole('button', { name: 'Log out' }).click();
		await kp.waitForURL(/\/login/);
		check((await kp.evaluate(() => localStorage.length)) === 0, 'the key stayed in localStorage after logout');
		await kctx.close();
	}

	begin('a second team sees none of the first team\'s sandboxes');
	const ctx2 = await browser.newContext({ viewport: { width: 1280, height: 800 } });
	const page2 = await ctx2.newPage();
	watch(page2, problems);
	await login(page2, env('WRENN_OTHER_EMAIL'), env('WRENN_OTHER_PASSWORD'));
	await page2.getByText('No sandboxes yet.').waitFor();
	check((await page2.locator('tr[data-sandbox]').count()) === 0, 'the second team lists sandboxes');
	await page2.goto(base + `/sandbox/${encodeURIComponent(id)}`);
	await page2.getByText('does not exist').waitFor();
	await shot(page2, 'other-team');

	check(problems.length === 0, `browser problems:\n${problems.join('\n')}`);
	log('all steps passed');
} catch (e) {
	console.error(`journey: FAILED at "${step}": ${e.stack ?? e}`);
	if (problems.length) console.error(problems.join('\n'));
	for (const c of browser.contexts()) {
		for (const p of c.pages()) {
			await p.screenshot({ path: path.join(shots, `failure-${step.replace(/\W+/g, '-')}.png`) }).catch(() => {});
		}
	}
	process.exitCode = 1;
} finally {
	await browser.close();
}
