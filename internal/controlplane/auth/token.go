package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Issuer is the iss claim of every session token.
const Issuer = "wrenn"

// DefaultSessionTTL is how long a session token is valid.
const DefaultSessionTTL = 24 * time.Hour

// MinSecretLen is the shortest signing secret Sessions accepts.
const MinSecretLen = 16

// Sessions issues and verifies HS256 session tokens (JWTs whose sub is a
// user id).
type Sessions struct {
	Secret []byte
	// TTL: DefaultSessionTTL when zero.
	TTL time.Duration
}

func (s Sessions) checkSecret() error {
	if len(s.Secret) < MinSecretLen {
		return fmt.Errorf("session secret is %d bytes, want at least %d", len(s.Secret), MinSecretLen)
	}
	return nil
}

// Issue returns a token for userID issued at now, and when it expires.
func (s Sessions) Issue(userID uuid.UUID, now time.Time) (string, time.Time, error) {
	if err := s.checkSecret(); err != nil {
		return "", time.Time{}, fmt.Errorf("issue session token: %w", err)
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	// JWT times are whole seconds; truncate so expires_at matches the claim.
	now = now.Truncate(time.Second)
	exp := now.Add(ttl)
	claims := jwt.RegisteredClaims{
		Issuer:    Issuer,
		Subject:   userID.String(),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
		// A random id makes every token unique, so logging out one
		// session (which revokes its token) never logs out another
		// issued to the same user in the same second.
		ID: uuid.NewString(),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.Secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign session token: %w", err)
	}
	return tok, exp, nil
}

// Verify checks token's signature, issuer and expiry at now and returns
// its user id. Every failure is an errdefs.ErrUnauthenticated.
func (s Sessions) Verify(token string, now time.Time) (uuid.UUID, error) {
	if err := s.checkSecret(); err != nil {
		return uuid.Nil, fmt.Errorf("verify session token: %w", err)
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims,
		func(*jwt.Token) (any, error) { return s.Secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return uuid.Nil, errdefs.New(errdefs.ErrUnauthenticated, "session expired: log in again")
		}
		return uuid.Nil, errdefs.New(errdefs.ErrUnauthenticated, "invalid session token")
	}
	id, err := uuid.Parse(claims.Subject)
	if err != nil {
		return uuid.Nil, errdefs.New(errdefs.ErrUnauthenticated, "invalid session token")
	}
	return id, nil
}
