package sandboxes

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// sealer keeps access tokens recoverable by the control plane only: E2B's
// connect answers a sandbox's envd token again, so it cannot be kept as a
// hash alone. AES-GCM under a key derived from the control plane's secret.
type sealer struct{ aead cipher.AEAD }

// newSealer returns nil (no sealing) for an empty secret. AES-256 with a
// 32-byte key and standard GCM cannot fail to set up, so neither can this.
func newSealer(secret []byte) *sealer {
	if len(secret) == 0 {
		return nil
	}
	key := sha256.Sum256(append([]byte("wrenn sandbox access token seal v1\x00"), secret...))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil
	}
	return &sealer{aead: aead}
}

// seal encrypts token bound to the sandbox's id (a sealed token copied to
// another row does not open there). Nil sealer or empty token: nil.
func (s *sealer) seal(id, token string) []byte {
	if s == nil || token == "" {
		return nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	return s.aead.Seal(nonce, nonce, []byte(token), []byte(id))
}

func (s *sealer) open(id string, sealed []byte) (string, error) {
	if s == nil || len(sealed) < s.aead.NonceSize() {
		return "", errors.New("no sealed token")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(id))
	if err != nil {
		return "", fmt.Errorf("open sealed token: %w", err)
	}
	return string(plain), nil
}

// AccessToken is the sandbox's access token (its envd token), for a
// caller of its own team that connects to it again. A sandbox made
// before tokens were sealed, or under another secret, has none to give.
func (s *Service) AccessToken(sb store.Sandbox) (string, error) {
	tok, err := s.seal.open(sb.ID, sb.AccessTokenSealed)
	if err != nil {
		return "", errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s's access token cannot be given again (it predates sealed tokens or the control plane's secret changed)", sb.ID)
	}
	return tok, nil
}

// AccessTokenByID is AccessToken for a sandbox known only by id (the envd
// proxy, which has already authorized the caller for it).
func (s *Service) AccessTokenByID(ctx context.Context, id string) (string, error) {
	sealed, err := s.q.SandboxSealedToken(ctx, id)
	if err != nil {
		return "", store.Found(err, "sandbox", id)
	}
	return s.AccessToken(store.Sandbox{ID: id, AccessTokenSealed: sealed})
}
