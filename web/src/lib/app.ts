// The one API client and session of the page.

import { browser } from '$app/environment';
import { Api, describeError } from './api';
import { createSession } from './session';

export const api = new Api({
	storage: browser ? window.localStorage : null,
	setCookie: (c) => {
		if (browser) document.cookie = c;
	},
	onUnauthenticated: (e) => session.expired(describeError(e))
});

export const session = createSession(api);
