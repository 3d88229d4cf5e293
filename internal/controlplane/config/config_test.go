package config

import (
	"bytes"
	"errors"
	"flag"
	"github.com/wrenn/wrenn/internal/envfile"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

const (
	dsn    = "postgres://wrenn:hunter2@db.internal:5432/wrenn?sslmode=disable"
	secret = "0123456789abcdef0123456789abcdef"
)

func required() []string {
	return []string{"DATABASE_URL=" + dsn, "WRENN_JWT_SECRET=" + secret}
}

// inEmptyDir runs the test where no ./.env exists.
func inEmptyDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	t.Chdir(d)
	return d
}

func TestDefaults(t *testing.T) {
	inEmptyDir(t)
	c, err := Parse(nil, required(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr != ":8000" || c.Domain != "localhost" || c.PublicURL != "http://127.0.0.1:8000" ||
		c.RateLimit != 50 || c.HostTimeout != 90*time.Second || c.LogLevel != slog.LevelInfo ||
		len(c.AllowedOrigins) != 0 || c.EnvFile != "" {
		t.Errorf("defaults: %+v", c)
	}
	if c.DatabaseURL != dsn || string(c.JWTSecret) != secret {
		t.Errorf("required settings not taken: %q %q", c.DatabaseURL, c.JWTSecret)
	}
}

func TestEverySettingFromTheEnvironment(t *testing.T) {
	inEmptyDir(t)
	c, err := Parse(nil, append(required(),
		"WRENN_CP_LISTEN_ADDR=127.0.0.1:9000",
		"WRENN_DOMAIN=Sandboxes.Example.com",
		"WRENN_CP_URL=https://wrenn.example.com/",
		"WRENN_RATE_LIMIT=2.5",
		"WRENN_ALLOWED_ORIGINS=https://app.example.com, *.example.org",
		"WRENN_HOST_TIMEOUT=2m",
		"WRENN_LOG_LEVEL=DEBUG",
		"WRENN_DIR=/srv/wrenn", // the agent's: shared .env files must not fail
	), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr != "127.0.0.1:9000" || c.Domain != "sandboxes.example.com" || c.PublicURL != "https://wrenn.example.com" ||
		c.RateLimit != 2.5 || c.HostTimeout != 2*time.Minute || c.LogLevel != slog.LevelDebug {
		t.Errorf("got %+v", c)
	}
	if strings.Join(c.AllowedOrigins, "|") != "https://app.example.com|*.example.org" {
		t.Errorf("allowed origins %q", c.AllowedOrigins)
	}
}

func TestPrecedence(t *testing.T) {
	dir := inEmptyDir(t)
	file := filepath.Join(dir, "cp.env")
	if err := os.WriteFile(file, []byte(`# comment
export DATABASE_URL="`+dsn+`"
WRENN_JWT_SECRET='`+secret+`'
WRENN_DOMAIN=file.example
WRENN_RATE_LIMIT=1
WRENN_LOG_LEVEL=warn
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]string{"--env-file", file, "--rate-limit", "3"},
		[]string{"WRENN_DOMAIN=env.example", "WRENN_RATE_LIMIT=2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, got, want string
	}{
		{"file only", c.LogLevel.String(), "WARN"},
		{"environment beats file", c.Domain, "env.example"},
		{"flag beats environment", formatFloat(c.RateLimit), "3"},
		{"secret from file", string(c.JWTSecret), secret},
		{"quoted value", c.DatabaseURL, dsn},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if c.sources["WRENN_RATE_LIMIT"] != "flag --rate-limit" || c.sources["WRENN_DOMAIN"] != "environment" || c.sources["WRENN_LOG_LEVEL"] != "env file" {
		t.Errorf("sources %v", c.sources)
	}
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestDefaultEnvFile(t *testing.T) {
	dir := inEmptyDir(t)
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("DATABASE_URL="+dsn+"\nWRENN_JWT_SECRET="+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(nil, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.EnvFile != ".env" || c.DatabaseURL != dsn {
		t.Errorf("./.env not read: env file %q, dsn %q", c.EnvFile, c.DatabaseURL)
	}
}

func TestErrorsNameEverySetting(t *testing.T) {
	inEmptyDir(t)
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		want    []string
		notWant []string
	}{
		{name: "missing required", env: nil,
			want: []string{"DATABASE_URL: required", "WRENN_JWT_SECRET: required"}},
		{name: "empty required", env: []string{"DATABASE_URL=", "WRENN_JWT_SECRET="},
			want: []string{"DATABASE_URL: required", "WRENN_JWT_SECRET: required"}},
		{name: "short secret", env: []string{"DATABASE_URL=" + dsn, "WRENN_JWT_SECRET=short-but-secret"},
			want:    []string{"WRENN_JWT_SECRET=<redacted> (from environment): must be at least 32 bytes"},
			notWant: []string{"short-but-secret"}},
		{name: "bad dsn", env: []string{"DATABASE_URL=postgres://u:topsecret@[bad", "WRENN_JWT_SECRET=" + secret},
			want: []string{"DATABASE_URL=<redacted>"}, notWant: []string{"topsecret"}},
		{name: "all the others at once", env: append(required(),
			"WRENN_CP_LISTEN_ADDR=8000",
			"WRENN_DOMAIN=https://x.example",
			"WRENN_CP_URL=ftp://x",
			"WRENN_RATE_LIMIT=0",
			"WRENN_ALLOWED_ORIGINS=a,,b",
			"WRENN_HOST_TIMEOUT=30s",
			"WRENN_LOG_LEVEL=loud",
			"WRENN_CP_LISTEN=:1",
		), want: []string{
			`WRENN_CP_LISTEN_ADDR="8000" (from environment): want host:port`,
			`WRENN_DOMAIN="https://x.example"`,
			`WRENN_CP_URL="ftp://x"`,
			`WRENN_RATE_LIMIT="0"`,
			`WRENN_ALLOWED_ORIGINS="a,,b"`,
			`WRENN_HOST_TIMEOUT="30s"`,
			`WRENN_LOG_LEVEL="loud"`,
			"WRENN_CP_LISTEN (in the environment): unknown setting",
		}},
		{name: "bad flag value", args: []string{"--host-timeout", "forever"}, env: required(),
			want: []string{`WRENN_HOST_TIMEOUT="forever" (from flag --host-timeout)`}},
		{name: "unknown flag", args: []string{"--jwt-secret", secret}, env: required(),
			want: []string{"flag provided but not defined: -jwt-secret"}},
		{name: "missing env file", args: []string{"--env-file", "nope.env"}, env: required(),
			want: []string{"--env-file nope.env: no such file"}},
		{name: "arguments", args: []string{"serve"}, env: required(), want: []string{"takes no arguments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.args, tc.env, &bytes.Buffer{})
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("got %v, want an invalid-argument error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q shows %q", err, w)
				}
			}
		})
	}
}

func TestBadEnvFile(t *testing.T) {
	dir := inEmptyDir(t)
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("ok=1\nthis is not an assignment\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Parse(nil, required(), &bytes.Buffer{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "line 2: want KEY=VALUE") {
		t.Fatalf("got %v", err)
	}
}

func TestHelpAndVersion(t *testing.T) {
	inEmptyDir(t)
	var out bytes.Buffer
	if _, err := Parse([]string{"-h"}, nil, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, w := range []string{"DATABASE_URL", "WRENN_JWT_SECRET", "-listen", "-env-file"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("usage does not mention %s:\n%s", w, out.String())
		}
	}
	// --version needs no other configuration.
	c, err := Parse([]string{"--version"}, nil, &out)
	if err != nil || !c.ShowVersion {
		t.Fatalf("--version: %+v %v", c, err)
	}
}

func TestLogValueRedacts(t *testing.T) {
	inEmptyDir(t)
	c, err := Parse(nil, required(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	s := buf.String()
	for _, leak := range []string{"hunter2", secret} {
		if strings.Contains(s, leak) {
			t.Errorf("log shows a secret %q: %s", leak, s)
		}
	}
	for _, want := range []string{"db.internal:5432", `"WRENN_CP_LISTEN_ADDR":{"value":":8000","source":"default"}`} {
		if !strings.Contains(s, want) {
			t.Errorf("log lacks %s: %s", want, s)
		}
	}
	if got := redactDSN("host=db password=x"); got != "<redacted>" {
		t.Errorf("key=value DSN shown as %q", got)
	}
	if got := redactDSN("postgres://db/wrenn?password=s3cr3t"); strings.Contains(got, "s3cr3t") {
		t.Errorf("password parameter shown: %q", got)
	}
}

// .env.example documents every setting and is itself a valid env file.
func TestEnvExample(t *testing.T) {
	path, err := filepath.Abs("../../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	vars, err := envfile.Read(path)
	if err != nil {
		t.Fatalf(".env.example: %v", err)
	}
	for _, s := range settings() {
		if _, ok := vars[s.env]; !ok {
			t.Errorf(".env.example does not document %s", s.env)
		}
	}
	// With the secret filled in, it is a working configuration.
	inEmptyDir(t)
	if _, err := Parse([]string{"--env-file", path}, []string{"WRENN_JWT_SECRET=" + secret}, &bytes.Buffer{}); err != nil {
		t.Errorf(".env.example with a secret: %v", err)
	}
}
