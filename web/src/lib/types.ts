// The API's shapes (api/openapi.yaml, components.schemas), as the
// dashboard uses them.

export type Role = 'owner' | 'admin' | 'member';
export type SandboxState = 'starting' | 'running' | 'paused' | 'hibernated' | 'missing' | 'stopped' | 'error';

export interface User {
	id: string;
	email: string;
	name: string;
	created_at: string;
}
export interface Team {
	id: string;
	name: string;
	created_at: string;
	role?: Role;
}
export interface CookieSession {
	expires_at: string;
	user: User;
	team?: Team;
}
export interface Me {
	user?: User;
	team: Team;
	teams: Team[];
	role: Role;
	platform_admin: boolean;
	api_key_id?: string;
}
export interface NetworkPolicy {
	allow_internet?: boolean;
	allow_out?: string[];
	deny_out?: string[];
}
export interface Sandbox {
	id: string;
	template: string;
	state: SandboxState;
	vcpus: number;
	memory_mb: number;
	disk_mb: number;
	timeout_sec: number;
	on_timeout: 'kill' | 'pause';
	metadata: Record<string, string>;
	created_at: string;
	updated_at?: string;
	host_id?: string;
	error?: string;
	forked_from?: string;
	network?: NetworkPolicy;
	public_ports?: number[];
	access_token?: string;
}
export interface CreateSandboxRequest {
	template?: string;
	vcpus?: number;
	memory_mb?: number;
	disk_mb?: number;
	timeout_sec?: number;
	on_timeout?: 'kill' | 'pause';
	metadata?: Record<string, string>;
	env?: Record<string, string>;
	network?: NetworkPolicy;
	public_ports?: number[];
}
export interface SandboxMetricsSample {
	time: string;
	cpu_count: number;
	cpu_used_pct: number;
	mem_used_bytes: number;
	mem_total_bytes: number;
	disk_used_bytes: number;
	disk_total_bytes: number;
}
export interface SandboxMetrics {
	guest_cpu_used_pct?: number;
	guest_mem_used_bytes?: number;
	guest_mem_total_bytes?: number;
	guest_disk_used_bytes?: number;
	guest_disk_total_bytes?: number;
	vmm_memory_bytes?: number;
	samples?: SandboxMetricsSample[];
}
export interface FileInfo {
	name: string;
	path: string;
	type: 'file' | 'dir' | 'symlink' | 'other';
	size?: number;
	mode?: number;
	modified_at?: string;
}
export interface APIKey {
	id: string;
	name: string;
	prefix: string;
	created_at: string;
	created_by?: string;
	last_used_at?: string;
	revoked_at?: string;
	platform: boolean;
}
export interface CreatedAPIKey extends APIKey {
	key: string;
}
export interface Member {
	user_id: string;
	email: string;
	name: string;
	role: Role;
	created_at: string;
}
export interface AuditEntry {
	id: number;
	actor_type: 'user' | 'api_key' | 'host' | 'system';
	actor_id: string;
	resource_type: string;
	resource_id: string;
	action: string;
	outcome: 'success' | 'failure';
	detail?: Record<string, unknown>;
	created_at: string;
}
export interface Host {
	id: string;
	type: 'regular' | 'byoc';
	status: 'pending' | 'online' | 'unreachable';
	created_at: string;
	address?: string;
	cpus?: number;
	memory_bytes?: number;
	memory_available_bytes?: number;
	disk_bytes?: number;
	disk_available_bytes?: number;
	reserved_vcpus?: number;
	reserved_memory_bytes?: number;
	sandboxes_running?: number;
	last_heartbeat_at?: string;
	agent_version?: string;
	vmm?: string;
	accelerator?: string;
}
export interface CreatedHost {
	host: Host;
	registration_token: string;
	registration_expires_at: string;
}
export interface Template {
	name: string;
	snapshot: boolean;
	builtin: boolean;
	status: 'pending' | 'ready';
	created_at: string;
	disk_bytes?: number;
	source_sandbox_id?: string;
	/** A built template: its newest ready version, that version's build, its sandboxes' default shape. */
	version?: number;
	build_id?: string;
	vcpus?: number;
	memory_mb?: number;
}
export type BuildStatus = 'building' | 'ready' | 'failed' | 'canceled' | 'retired';
export interface TemplateBuild {
	id: string;
	template: string;
	version: number;
	status: BuildStatus;
	error?: string;
	error_code?: string;
	from?: string;
	recipe_file: string;
	steps: number;
	cached_steps: number;
	current_step?: number;
	image_bytes?: number;
	digest?: string;
	snapshot?: boolean;
	created_at: string;
	finished_at?: string;
	duration_seconds?: number;
}
export interface TemplateBuildLogEntry {
	seq: number;
	time: string;
	step?: number;
	steps?: number;
	phase: 'queued' | 'base' | 'step' | 'image' | 'start' | 'done' | 'error';
	cached?: boolean;
	text: string;
}
export interface Invite {
	id: string;
	team_id: string;
	email: string;
	role: Role;
	created_at: string;
	expires_at: string;
	created_by?: string;
}
export interface CreatedInvite extends Invite {
	token: string;
}
