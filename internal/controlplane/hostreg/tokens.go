package hostreg

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Secrets a host is given. Only their SHA-256 is stored.
const (
	// RegistrationTokenPrefix starts a one-time registration token
	// ("wrr_" + 32 hex), valid RegistrationTokenTTL.
	RegistrationTokenPrefix = "wrr_"
	RegistrationTokenTTL    = time.Hour
	// CredentialPrefix starts a host credential ("wrh_" + 64 hex), valid
	// CredentialTTL and rotated by Renew.
	CredentialPrefix = "wrh_"
	CredentialTTL    = 90 * 24 * time.Hour
)

// NewRegistrationToken returns a fresh registration token and its hash.
func NewRegistrationToken() (token string, hash []byte) {
	return newSecret(RegistrationTokenPrefix, 16)
}

// NewCredential returns a fresh host credential and its hash.
func NewCredential() (token string, hash []byte) {
	return newSecret(CredentialPrefix, 32)
}

func newSecret(prefix string, n int) (string, []byte) {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes instead)
	tok := prefix + hex.EncodeToString(b)
	return tok, HashSecret(tok)
}

// HashSecret is what the hosts table stores for a token or credential.
func HashSecret(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// wellFormed reports whether tok is prefix followed by n lowercase hex
// bytes: anything else is refused before touching the database.
func wellFormed(tok, prefix string, n int) bool {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok || len(rest) != 2*n {
		return false
	}
	for _, c := range rest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
