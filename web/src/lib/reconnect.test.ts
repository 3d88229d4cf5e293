import { describe, expect, it } from 'vitest';
import { Backoff } from './reconnect';

describe('Backoff', () => {
	it('grows, caps, gives up, and starts over after a stable connection', () => {
		let t = 0;
		const b = new Backoff([100, 200, 400], 5, 1000, () => t);
		expect([b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 400, 400]);
		expect(b.attempts).toBe(5);
		expect(b.next()).toBeNull();
		b.reset();
		expect(b.next()).toBe(100);
		// Open briefly then drop: the backoff goes on growing.
		b.opened();
		t += 500;
		expect(b.next()).toBe(200);
		// Open long enough: the next drop starts from the first wait.
		b.opened();
		t += 1000;
		expect(b.next()).toBe(100);
	});
});
