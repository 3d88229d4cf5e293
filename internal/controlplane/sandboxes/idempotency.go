package sandboxes

// Idempotency keys (Stripe-style) for the operations that create things:
// create, fork and snapshot-as-template. A client whose request timed out
// (the control plane died mid-create, the network dropped the answer)
// retries with the same Idempotency-Key and gets the first request's
// result instead of a second sandbox.
//
// The key's row is written in the transaction that writes the resource's
// rows (a create's or fork's starting sandboxes, a snapshot's pending
// template), so no crash leaves a key naming nothing or a resource its key
// does not name. A retry reads the outcome from those rows (the sweeper
// settles them when their control plane died) or, for a failure, from the
// key, which records the error the first request answered. The primary
// key (team, op, key) makes concurrent first requests serialise on the
// insert: one wins, the others wait for it like retries.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// IdempotencyTTL is how long a key is remembered; the sweeper deletes it
// afterwards and the key may be used again.
const IdempotencyTTL = 24 * time.Hour

// MaxIdempotencyKey is the longest key accepted.
const MaxIdempotencyKey = 255

// Operation kinds a key is scoped to (idempotency_keys.op).
const (
	idemCreate   = "create"
	idemFork     = "fork"
	idemSnapshot = "snapshot"
)

// Key states (idempotency_keys.state). A key stays pending unless its
// first request failed: its resource's rows tell how it went.
const (
	keyPending = "pending"
	keyDone    = "done"
	keyFailed  = "failed"
)

// idemSweepBatch bounds the expired keys one sweep deletes.
const idemSweepBatch = 1000

// How long a retry waits for a first request still in flight before it
// answers 503 (retry later, same key): about what the operation may take.
const (
	idemWaitCreate   = agentCreateTimeout + time.Minute
	idemWaitFork     = agentForkTimeout + time.Minute
	idemWaitSnapshot = agentSnapshotTimeout + time.Minute
)

// errKeyTaken: a live key with the same (team, op, key) exists; the caller
// replays it instead.
var errKeyTaken = errors.New("idempotency key taken")

// keyVanished is the answer when a key that was taken is gone a moment
// later (it expired and was swept in between): rare, and a retry is safe.
func keyVanished(k *Idempotency) error {
	return errdefs.New(errdefs.ErrUnavailable, "Idempotency-Key %q expired while in use; retry with the same key", k.Key)
}

// Idempotency is a request's Idempotency-Key and the hash of its canonical
// form (HashRequest).
type Idempotency struct {
	Key         string
	RequestHash []byte
}

// CheckIdempotencyKey validates a key: 1-255 printable ASCII characters.
func CheckIdempotencyKey(k string) error {
	if len(k) < 1 || len(k) > MaxIdempotencyKey {
		return errdefs.New(errdefs.ErrInvalidArgument, "Idempotency-Key: must be 1-%d printable ASCII characters (got %d bytes)", MaxIdempotencyKey, len(k))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return errdefs.New(errdefs.ErrInvalidArgument, "Idempotency-Key: byte %d is not printable ASCII", i)
		}
	}
	return nil
}

// HashRequest is the SHA-256 of a request's canonical form: method, route
// pattern, path parameters and body bytes, each length-prefixed so no two
// different requests share a form.
func HashRequest(method, route string, params []string, body []byte) []byte {
	h := sha256.New()
	put := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put([]byte(method))
	put([]byte(route))
	for _, p := range params {
		put([]byte(p))
	}
	put(body)
	return h.Sum(nil)
}

// Option changes how a fork or a snapshot is done.
type Option func(*options)

type options struct{ idem *Idempotency }

// WithIdempotency makes the operation idempotent by k (nil: not).
func WithIdempotency(k *Idempotency) Option { return func(o *options) { o.idem = k } }

func optionsOf(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// claimKey records k for a first request, in the caller's transaction.
// errKeyTaken: a live key exists.
func (s *Service) claimKey(ctx context.Context, q *store.Queries, team uuid.UUID, op string, k *Idempotency, sandboxID *string, trafficSealed []byte) error {
	now := s.clk.Now()
	_, err := q.ClaimIdempotencyKey(ctx, store.ClaimIdempotencyKeyParams{
		TeamID: team, Op: op, Key: k.Key, RequestHash: k.RequestHash, SandboxID: sandboxID,
		TrafficTokenSealed: trafficSealed, Now: now, ExpiresAt: now.Add(IdempotencyTTL),
	})
	if store.IsNoRows(err) {
		return errKeyTaken
	}
	if err != nil {
		return fmt.Errorf("record idempotency key: %w", err)
	}
	return nil
}

// finishKey records how the first request with k ended: failed with
// answered when it is non-nil, else done with forks (a fork's ids).
func (s *Service) finishKey(ctx context.Context, q *store.Queries, team uuid.UUID, op string, k *Idempotency, forks []string, answered error) error {
	p := store.FinishIdempotencyKeyParams{State: keyDone, ForkIds: forks, Now: s.clk.Now(), TeamID: team, Op: op, Key: k.Key}
	if answered != nil {
		p.State, p.ErrorCode, p.ErrorMessage = keyFailed, errdefs.Code(answered), answered.Error()
	}
	if err := q.FinishIdempotencyKey(ctx, p); err != nil {
		return fmt.Errorf("record outcome of idempotency key: %w", err)
	}
	return nil
}

// settleFunc says whether the first request of a live key has ended (its
// outcome is then in the key's row or its resource's).
type settleFunc func(ctx context.Context, row store.IdempotencyKey) (bool, error)

// awaitKey loads team's live key k for op and waits, polling with backoff
// under ctx and at most wait, until settled says its first request ended.
// ok is false when there is no live key (the caller does the work). The
// same key with another request is ErrIdempotencyKeyReused; a first
// request that failed answers its error again.
func (s *Service) awaitKey(ctx context.Context, team uuid.UUID, op string, k *Idempotency, wait time.Duration, settled settleFunc) (store.IdempotencyKey, bool, error) {
	deadline := time.Now().Add(wait)
	delay := 20 * time.Millisecond
	for {
		row, err := s.q.GetIdempotencyKey(ctx, store.GetIdempotencyKeyParams{TeamID: team, Op: op, Key: k.Key, Now: s.clk.Now()})
		if store.IsNoRows(err) {
			return row, false, nil
		}
		if err != nil {
			return row, true, fmt.Errorf("look up idempotency key: %w", err)
		}
		if !bytes.Equal(row.RequestHash, k.RequestHash) {
			return row, true, errdefs.New(errdefs.ErrIdempotencyKeyReused,
				"Idempotency-Key %q was already used for a different %s request; use a new key for a new request", k.Key, op)
		}
		if row.State == keyFailed {
			return row, true, errdefs.FromCode(row.ErrorCode, row.ErrorMessage)
		}
		done, err := settled(ctx, row)
		if err != nil || done {
			return row, true, err
		}
		if time.Now().After(deadline) {
			return row, true, errdefs.New(errdefs.ErrUnavailable,
				"the first %s request with Idempotency-Key %q is still in progress; retry later with the same key", op, k.Key)
		}
		select {
		case <-ctx.Done():
			return row, true, fmt.Errorf("wait for the first %s request with Idempotency-Key %q: %w", op, k.Key, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// trafficAAD binds a sealed traffic token to its sandbox, apart from the
// access token's binding.
func trafficAAD(id string) string { return id + "\x00traffic" }

// replayCreate answers a create whose key is live as its first request
// did: the same sandbox and tokens, or the same error. ok is false when
// the key is not live.
func (s *Service) replayCreate(ctx context.Context, team uuid.UUID, k *Idempotency) (Created, bool, error) {
	var sb store.Sandbox
	row, ok, err := s.awaitKey(ctx, team, idemCreate, k, idemWaitCreate, func(ctx context.Context, row store.IdempotencyKey) (bool, error) {
		if row.SandboxID == nil {
			return false, fmt.Errorf("idempotency key %q names no sandbox", row.Key)
		}
		got, err := s.Get(ctx, team, *row.SandboxID)
		if err != nil {
			return false, err
		}
		sb = got
		return State(sb.State) != Starting, nil
	})
	if !ok || err != nil {
		return Created{}, ok, err
	}
	if State(sb.State) == Error {
		// The first request did not live to answer (its create was
		// swept as abandoned): its sandbox's error is the answer.
		return Created{}, true, errdefs.New(errdefs.ErrUnavailable, "sandbox %s failed to start: %s", sb.ID, sb.Error)
	}
	c := Created{Sandbox: sb}
	if tok, err := s.AccessToken(sb); err == nil {
		c.AccessToken = tok
	} else {
		s.log.Warn("replayed create cannot show the access token again", "sandbox_id", sb.ID, "err", err)
	}
	if len(row.TrafficTokenSealed) > 0 {
		if tok, err := s.seal.open(trafficAAD(sb.ID), row.TrafficTokenSealed); err == nil {
			c.TrafficToken = tok
		}
	}
	return c, true, nil
}

// failCreateKeyed records a create that will not finish: its key failed
// with answered (what the caller is told) and its sandbox in error with
// stored, in one transaction, so a retry waiting on the sandbox finds the
// key's outcome as soon as the sandbox leaves starting. Without a key it
// is failCreate. It returns answered.
func (s *Service) failCreateKeyed(ctx context.Context, team uuid.UUID, id string, k *Idempotency, stored, answered error) error {
	if k == nil {
		_ = s.failCreate(ctx, id, stored)
		return answered
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.inTx(ctx, func(q *store.Queries) error {
		if err := s.finishKey(ctx, q, team, idemCreate, k, nil, answered); err != nil {
			return err
		}
		return q.MarkSandboxFailed(ctx, store.MarkSandboxFailedParams{ID: id, Error: stored.Error(), Now: s.clk.Now()})
	}); err != nil {
		s.log.Error("record failed create", "sandbox_id", id, "err", err)
	}
	return answered
}

// recordKeyFailed records answered as the outcome of k's first request
// in a transaction of its own (best effort: a key left pending is
// reported as abandoned after its wait).
func (s *Service) recordKeyFailed(ctx context.Context, team uuid.UUID, op string, k *Idempotency, answered error) {
	if k == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.finishKey(ctx, s.q, team, op, k, nil, answered); err != nil {
		s.log.Error("record failed "+op, "idempotency_key", k.Key, "err", err)
	}
}

// replayFork answers a fork whose key is live as its first request did:
// once none of its forks is starting, the forks (running or as they are
// now); forks that all ended in error or stopped before the first
// request recorded an outcome (its control plane died and the sweeper
// rolled them back) answer that failure.
func (s *Service) replayFork(ctx context.Context, team uuid.UUID, k *Idempotency) ([]Created, bool, error) {
	var rows []store.Sandbox
	row, ok, err := s.awaitKey(ctx, team, idemFork, k, idemWaitFork, func(ctx context.Context, row store.IdempotencyKey) (bool, error) {
		got, err := s.q.TeamSandboxesByID(ctx, store.TeamSandboxesByIDParams{Ids: row.ForkIds, TeamID: team})
		if err != nil {
			return false, fmt.Errorf("load forks of idempotency key %q: %w", row.Key, err)
		}
		rows = got
		for _, sb := range rows {
			if State(sb.State) == Starting {
				return false, nil
			}
		}
		return true, nil
	})
	if !ok || err != nil {
		return nil, ok, err
	}
	failed := 0
	for _, sb := range rows {
		if st := State(sb.State); (st == Error || st == Stopped) && sb.Error != "" {
			failed++
		}
	}
	if len(rows) == 0 || failed == len(rows) {
		msg := "its forks are gone"
		if len(rows) > 0 {
			msg = rows[0].Error
		}
		return nil, true, errdefs.New(errdefs.ErrUnavailable, "the first fork request with Idempotency-Key %q did not finish: %s", row.Key, msg)
	}
	out := make([]Created, 0, len(rows))
	for _, sb := range rows {
		if st := State(sb.State); (st == Error || st == Stopped) && sb.Error != "" {
			continue // not made: the first request did not answer it either
		}
		c := Created{Sandbox: sb}
		if tok, err := s.AccessToken(sb); err == nil {
			c.AccessToken = tok
		}
		out = append(out, c)
	}
	return out, true, nil
}

// replaySnapshot answers a snapshot whose key is live as its first
// request did: its template once it is ready. A template removed without
// a recorded failure was rolled back by the sweeper (its control plane
// died before the host answered).
func (s *Service) replaySnapshot(ctx context.Context, team uuid.UUID, k *Idempotency) (store.Template, bool, error) {
	var tmpl store.Template
	var gone bool
	_, ok, err := s.awaitKey(ctx, team, idemSnapshot, k, idemWaitSnapshot, func(ctx context.Context, row store.IdempotencyKey) (bool, error) {
		if row.TemplateID == nil {
			return false, fmt.Errorf("idempotency key %q names no template", row.Key)
		}
		t, err := s.q.GetTeamTemplateByID(ctx, store.GetTeamTemplateByIDParams{ID: *row.TemplateID, TeamID: &team})
		if store.IsNoRows(err) {
			gone = true
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("load template of idempotency key %q: %w", row.Key, err)
		}
		tmpl = t
		return t.Status != TemplatePending, nil
	})
	if !ok || err != nil {
		return store.Template{}, ok, err
	}
	if gone {
		return store.Template{}, true, errdefs.New(errdefs.ErrNotFound,
			"the template the first snapshot request with Idempotency-Key %q made is gone (deleted, or rolled back when that request did not finish)", k.Key)
	}
	return tmpl, true, nil
}

// SweepIdempotencyKeys deletes one batch of expired keys and says how
// many.
func (s *Service) sweepIdempotencyKeys(ctx context.Context) (int64, error) {
	n, err := s.q.DeleteExpiredIdempotencyKeys(ctx, store.DeleteExpiredIdempotencyKeysParams{Now: s.clk.Now(), MaxRows: idemSweepBatch})
	if err != nil {
		return 0, fmt.Errorf("delete expired idempotency keys: %w", err)
	}
	return n, nil
}
