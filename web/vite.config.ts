import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vitest/config';

// `make dev-frontend`: Vite's dev server with hot reload, proxying the API
// (and the terminal's WebSocket) to a running control plane.
const api = process.env.WRENN_API_URL ?? 'http://127.0.0.1:8000';
const proxied = ['/v1', '/openapi.yaml', '/docs', '/healthz'];

export default defineConfig({
	plugins: [sveltekit()],
	server: {
		port: 5173,
		strictPort: true,
		// The Host header stays localhost:5173 so wrenn-cp's same-origin
		// WebSocket check passes through the proxy.
		proxy: Object.fromEntries(proxied.map((p) => [p, { target: api, ws: p === '/v1' }]))
	},
	test: {
		include: ['src/**/*.test.ts'],
		environment: 'node'
	}
});
