import { describe, expect, it } from 'vitest';
import { age, auditFilters, bytes, filterSandboxes, joinPath, parentDir, parseCIDRs, parsePairs } from './format';
import type { Sandbox } from './types';

const sb = (id: string, state: Sandbox['state'], metadata: Record<string, string> = {}): Sandbox => ({
	id, state, metadata, template: 'minimal', vcpus: 1, memory_mb: 512, disk_mb: 2048, timeout_sec: 300,
	on_timeout: 'kill', created_at: '2026-01-01T00:00:00Z'
});

describe('format', () => {
	it('bytes', () => {
		expect(bytes(0)).toBe('0 B');
		expect(bytes(1536)).toBe('1.5 KiB');
		expect(bytes(512 * 1024 * 1024)).toBe('512 MiB');
		expect(bytes(undefined)).toBe('—');
	});
	it('age', () => {
		const now = Date.parse('2026-01-01T02:03:00Z');
		expect(age('2026-01-01T02:02:30Z', now)).toBe('30 s');
		expect(age('2026-01-01T00:00:00Z', now)).toBe('2 h 3 min');
		expect(age(undefined, now)).toBe('—');
	});
	it('filters sandboxes by state and by text in id, template or metadata', () => {
		const list = [sb('a1', 'running', { app: 'web' }), sb('b2', 'paused'), sb('c3', 'error', { app: 'db' })];
		expect(filterSandboxes(list, { states: [], text: '' }).length).toBe(3);
		expect(filterSandboxes(list, { states: ['running', 'paused'], text: '' }).map((s) => s.id)).toEqual(['a1', 'b2']);
		expect(filterSandboxes(list, { states: [], text: 'APP=DB' }).map((s) => s.id)).toEqual(['c3']);
		expect(filterSandboxes(list, { states: ['running'], text: 'db' })).toEqual([]);
	});
	it('parses KEY=value lines and says which line is wrong', () => {
		expect(parsePairs('A=1\n# comment\n\nB = two=2', 'env')).toEqual({ A: '1', B: ' two=2' });
		expect(() => parsePairs('A=1\nnope', 'Metadata')).toThrow('Metadata, line 2: write KEY=value');
	});
	it('parses CIDR lists', () => {
		expect(parseCIDRs('10.0.0.0/8, 1.1.1.1', 'allow')).toEqual(['10.0.0.0/8', '1.1.1.1']);
		expect(() => parseCIDRs('example.com', 'deny')).toThrow('deny: example.com is not an IPv4 address or CIDR');
	});
	it('paths', () => {
		expect(parentDir('/home/user/a.txt')).toBe('/home/user');
		expect(parentDir('/home')).toBe('/');
		expect(parentDir('/')).toBe('/');
		expect(joinPath('/', 'x')).toBe('/x');
		expect(joinPath('/home/user', 'x')).toBe('/home/user/x');
	});
});

describe('auditFilters', () => {
	const empty = { actorType: '', actorId: '', resourceType: '', resourceId: '', action: '', outcome: '', since: '', until: '' };
	it('drops empty fields and trims', () => {
		expect(auditFilters(empty)).toEqual({});
		expect(auditFilters({ ...empty, action: ' create ', resourceType: 'sandbox', outcome: 'failure' })).toEqual({
			action: 'create',
			resource_type: 'sandbox',
			outcome: 'failure'
		});
	});
	it('turns local times into RFC 3339 and checks the range', () => {
		const f = auditFilters({ ...empty, since: '2026-12-07T10:30', until: '2026-12-07T11:00' });
		expect(f.since).toBe(new Date(2026, 11, 7, 10, 30).toISOString());
		expect(f.until).toBe(new Date(2026, 11, 7, 11, 0).toISOString());
		expect(() => auditFilters({ ...empty, since: '2026-12-07T11:00', until: '2026-12-07T10:00' })).toThrow(/before/);
		expect(() => auditFilters({ ...empty, since: 'soon' })).toThrow(/From/);
	});
});
