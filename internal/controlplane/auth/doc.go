// Package auth holds the control plane's credential primitives: argon2id
// password hashes, HS256 session tokens, and team API keys. It is pure (no
// I/O besides crypto/rand); the REST layer stores and looks up what it makes.
package auth
