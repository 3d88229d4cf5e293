package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// APIKeyPrefix starts every API key, so keys are recognisable in code and
// by secret scanners, and told apart from session tokens.
const APIKeyPrefix = "wrn_"

// apiKeyHexLen is the number of hex characters after the prefix (128 bits).
const apiKeyHexLen = 32

// DisplayPrefixLen is how many leading characters of a key are stored in
// clear to tell keys apart in listings ("wrn_" + 8 hex).
const DisplayPrefixLen = 12

// NewAPIKey is a freshly generated key: Key is shown to the user once;
// Hash and Prefix are stored.
type NewAPIKey struct {
	Key    string
	Hash   []byte
	Prefix string
}

// GenerateAPIKey returns a new random key: wrn_ + 32 lowercase hex.
func GenerateAPIKey() (NewAPIKey, error) {
	b := make([]byte, apiKeyHexLen/2)
	if _, err := rand.Read(b); err != nil {
		return NewAPIKey{}, fmt.Errorf("generate api key: %w", err)
	}
	key := APIKeyPrefix + hex.EncodeToString(b)
	return NewAPIKey{Key: key, Hash: HashAPIKey(key), Prefix: key[:DisplayPrefixLen]}, nil
}

// HashAPIKey is what is stored for key: its SHA-256 (32 raw bytes). Keys
// carry 128 random bits, so a fast unsalted hash is enough.
func HashAPIKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// IsAPIKey reports whether s has an API key's shape (wrn_ + 32 lowercase
// hex). It says nothing about whether the key exists.
func IsAPIKey(s string) bool {
	rest, ok := strings.CutPrefix(s, APIKeyPrefix)
	if !ok || len(rest) != apiKeyHexLen {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
