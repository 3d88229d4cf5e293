import adapter from '@sveltejs/adapter-static';
import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

/** @type {import('@sveltejs/kit').Config} */
const config = {
	preprocess: vitePreprocess(),
	kit: {
		// wrenn-cp embeds the build (internal/controlplane/webui, -tags webui).
		// Every page is rendered in the browser: index.html is the fallback for
		// any path the API does not own.
		adapter: adapter({
			pages: '../internal/controlplane/webui/dist',
			assets: '../internal/controlplane/webui/dist',
			fallback: 'index.html',
			strict: false
		}),
		// Hashed file names and no inline code beyond the one bootstrap script,
		// which wrenn-cp allows by hash in its Content-Security-Policy.
		output: { preloadStrategy: 'modulepreload' },
		version: { pollInterval: 0 }
	}
};

export default config;
