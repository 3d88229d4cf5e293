// Formatting and filtering helpers shared by the pages (pure, unit-tested).

import type { AuditFilters } from './api';
import type { Sandbox } from './types';

export function bytes(n: number | undefined | null): string {
	if (n === undefined || n === null || !Number.isFinite(n)) return '—';
	const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
	let i = 0;
	let v = n;
	while (Math.abs(v) >= 1024 && i < units.length - 1) {
		v /= 1024;
		i++;
	}
	return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** "3 min" style age of an ISO time relative to now. */
export function age(iso: string | undefined, now: number = Date.now()): string {
	if (!iso) return '—';
	const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
	if (s < 60) return `${s} s`;
	if (s < 3600) return `${Math.floor(s / 60)} min`;
	if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
	return `${Math.floor(s / 86400)} d`;
}

export interface SandboxFilter {
	/** States to show; empty: all. */
	states: string[];
	/** Matches id, template, host or a metadata key=value (case-insensitive). */
	text: string;
}

export function filterSandboxes(list: Sandbox[], f: SandboxFilter): Sandbox[] {
	const text = f.text.trim().toLowerCase();
	return list.filter((s) => {
		if (f.states.length && !f.states.includes(s.state)) return false;
		if (!text) return true;
		const hay = [s.id, s.template, s.host_id ?? '', ...Object.entries(s.metadata ?? {}).map(([k, v]) => `${k}=${v}`)];
		return hay.some((h) => h.toLowerCase().includes(text));
	});
}

/** Parses "KEY=value" lines (metadata, env vars); blank lines and # comments skipped. */
export function parsePairs(text: string, what: string): Record<string, string> {
	const out: Record<string, string> = {};
	text.split('\n').forEach((raw, i) => {
		const line = raw.trim();
		if (!line || line.startsWith('#')) return;
		const eq = line.indexOf('=');
		if (eq <= 0) throw new Error(`${what}, line ${i + 1}: write KEY=value`);
		out[line.slice(0, eq).trim()] = line.slice(eq + 1);
	});
	return out;
}

/** Parses a comma or space separated list of IPv4 CIDRs. */
export function parseCIDRs(text: string, what: string): string[] {
	const items = text.split(/[\s,]+/).filter(Boolean);
	for (const c of items) {
		if (!/^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/.test(c)) throw new Error(`${what}: ${c} is not an IPv4 address or CIDR`);
	}
	return items;
}

/** The parent directory of an absolute path. */
export function parentDir(path: string): string {
	const p = path.replace(/\/+$/, '');
	const i = p.lastIndexOf('/');
	return i <= 0 ? '/' : p.slice(0, i);
}

export function joinPath(dir: string, name: string): string {
	return (dir.endsWith('/') ? dir : dir + '/') + name;
}

/** The audit page's filter form, as typed. */
export interface AuditForm {
	actorType: string;
	actorId: string;
	resourceType: string;
	resourceId: string;
	action: string;
	outcome: string;
	/** datetime-local values ("2026-12-07T10:30"), in the browser's zone. */
	since: string;
	until: string;
}

/** The form as the API's filters: trimmed, times as RFC 3339 UTC. */
export function auditFilters(f: AuditForm): AuditFilters {
	const time = (v: string, what: string): string | undefined => {
		if (!v) return undefined;
		const ms = Date.parse(v);
		if (!Number.isFinite(ms)) throw new Error(`${what}: not a date and time`);
		return new Date(ms).toISOString();
	};
	const out: AuditFilters = {
		actor_type: f.actorType || undefined,
		actor_id: f.actorId.trim() || undefined,
		resource_type: f.resourceType.trim() || undefined,
		resource_id: f.resourceId.trim() || undefined,
		action: f.action.trim() || undefined,
		outcome: f.outcome || undefined,
		since: time(f.since, 'From'),
		until: time(f.until, 'To')
	};
	if (out.since && out.until && out.since >= out.until) throw new Error('"From" must be before "To".');
	return out;
}
