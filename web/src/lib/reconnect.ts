// When to reconnect a dropped connection (the terminal's WebSocket): waits
// that grow, a limit, and a reset once a connection has proved stable (so
// a server that accepts and at once drops does not reset the backoff).

export class Backoff {
	private attempt = 0;
	private openedAt: number | null = null;

	constructor(
		private readonly delaysMs: number[] = [1000, 2000, 4000, 8000, 15000],
		private readonly maxAttempts = 10,
		/** A connection open this long counts as stable. */
		private readonly stableMs = 10000,
		private readonly now: () => number = Date.now
	) {}

	/** The attempt the next reconnect will be (1-based), for the page. */
	get attempts(): number {
		return this.attempt;
	}

	opened(): void {
		this.openedAt = this.now();
	}

	/** After a drop: the wait before the next try, or null to give up. */
	next(): number | null {
		if (this.openedAt !== null && this.now() - this.openedAt >= this.stableMs) this.attempt = 0;
		this.openedAt = null;
		if (this.attempt >= this.maxAttempts) return null;
		const d = this.delaysMs[Math.min(this.attempt, this.delaysMs.length - 1)] ?? 1000;
		this.attempt++;
		return d;
	}

	/** A manual reconnect starts over. */
	reset(): void {
		this.attempt = 0;
		this.openedAt = null;
	}
}
