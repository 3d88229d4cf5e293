package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// APIKeyPrefix starts every Wrenn-format API key, so keys are recognisable
// in code and by secret scanners, and told apart from session tokens.
const APIKeyPrefix = "wrn_"

// E2BKeyPrefix starts keys in E2B's format ("e2b_" + 40 hex): E2B's SDKs
// and tools expect that shape, so a team may ask for keys that have it.
const E2BKeyPrefix = "e2b_"

// KeyFormat is the shape of a new key: both are accepted everywhere.
type KeyFormat string

const (
	// KeyFormatWrenn is wrn_ + 32 lowercase hex (128 bits).
	KeyFormatWrenn KeyFormat = "wrenn"
	// KeyFormatE2B is e2b_ + 40 lowercase hex (160 bits).
	KeyFormatE2B KeyFormat = "e2b"
)

// apiKeyHexLen and e2bKeyHexLen are the hex characters after each prefix.
const (
	apiKeyHexLen = 32
	e2bKeyHexLen = 40
)

// ParseKeyFormat reads a format name; "" is the Wrenn format.
func ParseKeyFormat(s string) (KeyFormat, bool) {
	switch KeyFormat(s) {
	case "", KeyFormatWrenn:
		return KeyFormatWrenn, true
	case KeyFormatE2B:
		return KeyFormatE2B, true
	}
	return "", false
}

// HasAPIKeyPrefix reports whether s starts like an API key of either
// format (and so is not a session token).
func HasAPIKeyPrefix(s string) bool {
	return strings.HasPrefix(s, APIKeyPrefix) || strings.HasPrefix(s, E2BKeyPrefix)
}

// DisplayPrefixLen is how many leading characters of a key are stored in
// clear to tell keys apart in listings (the prefix + 8 hex).
const DisplayPrefixLen = 12

// NewAPIKey is a freshly generated key: Key is shown to the user once;
// Hash and Prefix are stored.
type NewAPIKey struct {
	Key    string
	Hash   []byte
	Prefix string
}

// GenerateAPIKey returns a new random key: wrn_ + 32 lowercase hex.
func GenerateAPIKey() (NewAPIKey, error) { return GenerateAPIKeyIn(KeyFormatWrenn) }

// GenerateAPIKeyIn returns a new random key in format f.
func GenerateAPIKeyIn(f KeyFormat) (NewAPIKey, error) {
	prefix, n := APIKeyPrefix, apiKeyHexLen
	if f == KeyFormatE2B {
		prefix, n = E2BKeyPrefix, e2bKeyHexLen
	}
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		return NewAPIKey{}, fmt.Errorf("generate api key: %w", err)
	}
	key := prefix + hex.EncodeToString(b)
	return NewAPIKey{Key: key, Hash: HashAPIKey(key), Prefix: key[:DisplayPrefixLen]}, nil
}

// HashAPIKey is what is stored for key: its SHA-256 (32 raw bytes). Keys
// carry 128 random bits, so a fast unsalted hash is enough.
func HashAPIKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// IsAPIKey reports whether s has an API key's shape (wrn_ + 32 or e2b_ +
// 40 lowercase hex). It says nothing about whether the key exists.
func IsAPIKey(s string) bool {
	rest, ok := strings.CutPrefix(s, APIKeyPrefix)
	n := apiKeyHexLen
	if !ok {
		rest, ok = strings.CutPrefix(s, E2BKeyPrefix)
		n = e2bKeyHexLen
	}
	if !ok || len(rest) != n {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
