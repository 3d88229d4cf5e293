package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// cheap keeps the tests fast; the format and checks are the same.
var cheap = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestPasswordRoundTrip(t *testing.T) {
	h, err := HashPassword("hunter2hunter2", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q is not an argon2id PHC string with its parameters", h)
	}
	if err := VerifyPassword("hunter2hunter2", h); err != nil {
		t.Fatalf("verify right password: %v", err)
	}
	if err := VerifyPassword("hunter2hunter3", h); !errors.Is(err, ErrMismatch) {
		t.Fatalf("verify wrong password: %v, want ErrMismatch", err)
	}
	h2, err := HashPassword("hunter2hunter2", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestDefaultParamsHash(t *testing.T) {
	h, err := HashPassword("pw-with-default-params", DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q", h)
	}
	if err := VerifyPassword("pw-with-default-params", h); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyMalformedHash(t *testing.T) {
	good, err := HashPassword("x", cheap)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	for _, tc := range []struct{ name, hash string }{
		{"empty", ""},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuu"},
		{"argon2i", strings.Replace(good, "argon2id", "argon2i", 1)},
		{"version", strings.Replace(good, "v=19", "v=16", 1)},
		{"huge memory", strings.Replace(good, "m=64", "m=99999999", 1)},
		{"zero time", strings.Replace(good, "t=1", "t=0", 1)},
		{"bad salt", strings.Join([]string{"", parts[1], parts[2], parts[3], "!!!", parts[5]}, "$")},
		{"short key", strings.Join([]string{"", parts[1], parts[2], parts[3], parts[4], "AAAA"}, "$")},
		{"extra field", good + "$x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyPassword("x", tc.hash)
			if err == nil || errors.Is(err, ErrMismatch) {
				t.Fatalf("verify against %q: %v, want a parse error", tc.hash, err)
			}
		})
	}
}

func TestSessions(t *testing.T) {
	s := Sessions{Secret: []byte("0123456789abcdef0123456789abcdef")}
	user := uuid.New()
	now := time.Date(2030, 1, 1, 12, 0, 0, 500, time.UTC)
	tok, exp, err := s.Issue(user, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Truncate(time.Second).Add(DefaultSessionTTL); !exp.Equal(want) {
		t.Fatalf("expires %v, want %v", exp, want)
	}
	got, err := s.Verify(tok, now.Add(time.Hour))
	if err != nil || got != user {
		t.Fatalf("verify: %v %v, want %v", got, err, user)
	}

	other := Sessions{Secret: []byte("another-secret-another-secret!!")}
	forged, _, err := other.Issue(user, now)
	if err != nil {
		t.Fatal(err)
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
		Issuer: Issuer, Subject: user.String(), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	})
	noneTok, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	wrongIss, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: "someone", Subject: user.String(), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}).SignedString(s.Secret)
	if err != nil {
		t.Fatal(err)
	}
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: Issuer, Subject: user.String(),
	}).SignedString(s.Secret)
	if err != nil {
		t.Fatal(err)
	}
	badSub, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: Issuer, Subject: "root", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}).SignedString(s.Secret)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tok string
		at        time.Time
	}{
		{"expired", tok, now.Add(DefaultSessionTTL + time.Second)},
		{"other secret", forged, now},
		{"alg none", noneTok, now},
		{"wrong issuer", wrongIss, now},
		{"no expiry", noExp, now},
		{"subject not a uuid", badSub, now},
		{"garbage", "not.a.jwt", now},
		{"tampered", tok[:len(tok)-2] + "xx", now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Verify(tc.tok, tc.at)
			if !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Fatalf("verify: %v, want unauthenticated", err)
			}
		})
	}
}

func TestSessionsRefuseShortSecret(t *testing.T) {
	s := Sessions{Secret: []byte("short")}
	if _, _, err := s.Issue(uuid.New(), time.Now()); err == nil {
		t.Fatal("issued a token with a 5-byte secret")
	}
}

func TestAPIKeys(t *testing.T) {
	k, err := GenerateAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	if !IsAPIKey(k.Key) || len(k.Key) != 36 {
		t.Fatalf("key %q does not look like wrn_ + 32 hex", k.Key)
	}
	if k.Prefix != k.Key[:12] || !strings.HasPrefix(k.Prefix, "wrn_") {
		t.Fatalf("prefix %q of %q", k.Prefix, k.Key)
	}
	if len(k.Hash) != 32 || string(k.Hash) != string(HashAPIKey(k.Key)) {
		t.Fatalf("hash %x is not the key's SHA-256", k.Hash)
	}
	k2, err := GenerateAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	if k2.Key == k.Key {
		t.Fatal("two generated keys are equal")
	}
	for _, tc := range []struct {
		name string
		s    string
		want bool
	}{
		{"valid", "wrn_0123456789abcdef0123456789abcdef", true},
		{"uppercase hex", "wrn_0123456789ABCDEF0123456789abcdef", false},
		{"short", "wrn_0123", false},
		{"long", "wrn_0123456789abcdef0123456789abcdef0", false},
		{"no prefix", "0123456789abcdef0123456789abcdef", false},
		{"jwt", "eyJhbGciOiJIUzI1NiJ9.e30.x", false},
		{"non hex", "wrn_0123456789abcdef0123456789abcdeg", false},
		{"e2b valid", "e2b_0123456789abcdef0123456789abcdef01234567", true},
		{"e2b with wrenn length", "e2b_0123456789abcdef0123456789abcdef", false},
		{"wrenn with e2b length", "wrn_0123456789abcdef0123456789abcdef01234567", false},
		{"e2b uppercase", "e2b_0123456789ABCDEF0123456789abcdef01234567", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsAPIKey(tc.s); got != tc.want {
				t.Fatalf("IsAPIKey(%q) = %v, want %v", tc.s, got, tc.want)
			}
		})
	}
}

func TestE2BFormatKeys(t *testing.T) {
	k, err := GenerateAPIKeyIn(KeyFormatE2B)
	if err != nil {
		t.Fatal(err)
	}
	if !IsAPIKey(k.Key) || len(k.Key) != 44 || !strings.HasPrefix(k.Key, "e2b_") || !HasAPIKeyPrefix(k.Key) {
		t.Fatalf("key %q does not look like e2b_ + 40 hex", k.Key)
	}
	if k.Prefix != k.Key[:12] {
		t.Fatalf("prefix %q of %q", k.Prefix, k.Key)
	}
	for in, want := range map[string]KeyFormat{"": KeyFormatWrenn, "wrenn": KeyFormatWrenn, "e2b": KeyFormatE2B} {
		if got, ok := ParseKeyFormat(in); !ok || got != want {
			t.Fatalf("ParseKeyFormat(%q) = %q, %v", in, got, ok)
		}
	}
	if _, ok := ParseKeyFormat("E2B"); ok {
		t.Fatal("ParseKeyFormat accepted an unknown format")
	}
}

func BenchmarkHashPasswordDefault(b *testing.B) {
	for b.Loop() {
		if _, err := HashPassword("benchmark password", DefaultParams); err != nil {
			b.Fatal(err)
		}
	}
}
