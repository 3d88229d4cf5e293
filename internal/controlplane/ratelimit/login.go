package ratelimit

import (
	"strings"
	"sync"
	"time"
)

// Login throttling defaults.
const (
	// DefaultFreeFailures is how many wrong passwords in a row an account
	// takes before logins to it are delayed.
	DefaultFreeFailures = 5
	// DefaultBaseDelay is the first delay; each further failure doubles it.
	DefaultBaseDelay = time.Second
	// DefaultMaxDelay caps the delay, so an attacker can lock a victim out
	// for at most this long per failure they pay for.
	DefaultMaxDelay = 15 * time.Minute
	// DefaultForget is how long after its last failure an account's count
	// is forgotten.
	DefaultForget = time.Hour
	// maxAccounts bounds the memory held; beyond it the stalest entries
	// go (per-address limits keep one client from getting here quickly).
	maxAccounts = 100_000
)

// LoginThrottle delays logins to an account after repeated failures:
// after n >= FreeFailures wrong passwords in a row, the next attempt must
// wait BaseDelay·2^(n-FreeFailures), at most MaxDelay. It is keyed by the email
// as typed (normalised), whether or not the account exists, so its answers
// do not tell who has an account. A success clears the count.
type LoginThrottle struct {
	FreeFailures int
	BaseDelay    time.Duration
	MaxDelay     time.Duration
	Forget       time.Duration

	clk      Clock
	mu       sync.Mutex
	accounts map[string]*failures
}

type failures struct {
	n     int
	last  time.Time
	until time.Time // no attempt before this
}

// NewLoginThrottle returns a throttle with the default policy.
func NewLoginThrottle(clk Clock) *LoginThrottle {
	return &LoginThrottle{
		FreeFailures: DefaultFreeFailures, BaseDelay: DefaultBaseDelay, MaxDelay: DefaultMaxDelay, Forget: DefaultForget,
		clk: clk, accounts: map[string]*failures{},
	}
}

// AccountKey normalises an email for throttling: case and surrounding
// space do not make a new account to guess at.
func AccountKey(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// Check says whether a login to account may be tried now, and if not, how
// long until it may.
func (t *LoginThrottle) Check(account string) (bool, time.Duration) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.accounts[account]
	if f == nil || !now.Before(f.until) {
		return true, 0
	}
	return false, f.until.Sub(now)
}

// Fail records a wrong password (or an unknown account) for account.
func (t *LoginThrottle) Fail(account string) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.accounts[account]
	if f != nil && now.Sub(f.last) >= t.Forget {
		f = nil
	}
	if f == nil {
		if len(t.accounts) >= maxAccounts {
			t.sweep(now)
		}
		f = &failures{}
		t.accounts[account] = f
	}
	f.n++
	f.last = now
	if over := f.n - t.FreeFailures; over >= 0 {
		d := t.MaxDelay
		if over < 30 {
			d = min(t.MaxDelay, t.BaseDelay<<over)
		}
		f.until = now.Add(d)
	}
}

// Succeed clears account's failures.
func (t *LoginThrottle) Succeed(account string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.accounts, account)
}

// Len is how many accounts are tracked.
func (t *LoginThrottle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.accounts)
}

// sweep drops forgotten entries; if none are, it drops entries that are not
// currently delayed, then any, until there is room. Called with mu held.
func (t *LoginThrottle) sweep(now time.Time) {
	for k, f := range t.accounts {
		if now.Sub(f.last) >= t.Forget {
			delete(t.accounts, k)
		}
	}
	for k, f := range t.accounts {
		if len(t.accounts) < maxAccounts {
			return
		}
		if !now.Before(f.until) {
			delete(t.accounts, k)
		}
	}
	for k := range t.accounts {
		if len(t.accounts) < maxAccounts {
			return
		}
		delete(t.accounts, k)
	}
}
