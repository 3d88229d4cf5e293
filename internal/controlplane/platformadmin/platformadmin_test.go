package platformadmin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/pgtest"
	"github.com/wrenn/wrenn/internal/store"
)

const pw = "correct horse battery staple"

func TestEnsureIsIdempotent(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)

	res, err := Ensure(ctx, pool, Request{Email: "ops@example.com", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Created || !res.User.PlatformAdmin || res.TeamID == "" {
		t.Fatalf("first run: %+v", res)
	}
	if err := auth.VerifyPassword(pw, res.User.PasswordHash); err != nil {
		t.Errorf("password not set: %v", err)
	}
	teams, err := store.New(pool).ListUserTeams(ctx, res.User.ID)
	if err != nil || len(teams) != 1 || teams[0].Role != "owner" || teams[0].Name != DefaultTeamName {
		t.Errorf("teams of the new admin: %+v, %v", teams, err)
	}

	// Again: nothing changes, not even the password.
	again, err := Ensure(ctx, pool, Request{Email: "OPS@example.com", Password: "another password"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Action != Already || again.User.ID != res.User.ID || again.User.PasswordHash != res.User.PasswordHash {
		t.Errorf("second run: %+v", again)
	}
	teams, _ = store.New(pool).ListUserTeams(ctx, res.User.ID)
	if len(teams) != 1 {
		t.Errorf("second run made another team: %+v", teams)
	}
	reset, err := Ensure(ctx, pool, Request{Email: "ops@example.com", Password: "another password", ResetPassword: true})
	if err != nil || !reset.PasswordSet || auth.VerifyPassword("another password", reset.User.PasswordHash) != nil {
		t.Errorf("reset password: %+v, %v", reset, err)
	}

	// An existing user is promoted, keeping their password.
	u, err := store.New(pool).CreateUser(ctx, store.CreateUserParams{Email: "dev@example.com", PasswordHash: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if u.PlatformAdmin {
		t.Fatal("a new user is a platform admin")
	}
	prom, err := Ensure(ctx, pool, Request{Email: "dev@example.com"})
	if err != nil || prom.Action != Promoted || !prom.User.PlatformAdmin || prom.User.PasswordHash != "x" {
		t.Errorf("promote: %+v, %v", prom, err)
	}

	admins, err := List(ctx, pool)
	if err != nil || len(admins) != 2 {
		t.Errorf("list: %+v, %v", admins, err)
	}
	if was, err := Demote(ctx, pool, "dev@example.com"); err != nil || !was {
		t.Errorf("demote: %v, %v", was, err)
	}
	if admins, _ := List(ctx, pool); len(admins) != 1 || admins[0].Email != "ops@example.com" {
		t.Errorf("after demote: %+v", admins)
	}

	for _, bad := range []Request{
		{Email: "new@example.com"},                    // creating needs a password
		{Email: "new@example.com", Password: "short"}, // too short
		{Email: "not an email", Password: pw},
	} {
		if _, err := Ensure(ctx, pool, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Ensure(%+v) = %v, want invalid_argument", bad, err)
		}
	}
	if _, err := Demote(ctx, pool, "nobody@example.com"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("demote unknown: %v", err)
	}
}

func TestCLI(t *testing.T) {
	ctx := context.Background()
	_, dsn := pgtest.NewWithDSN(t)
	t.Chdir(t.TempDir()) // no ./.env
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"DATABASE_URL=" + dsn}
	run := func(stdin string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := Main(ctx, args, env, strings.NewReader(stdin), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	out, err := run("", "--email", "ops@example.com", "--password-file", pwFile)
	if err != nil || !strings.Contains(out, "created platform admin ops@example.com") {
		t.Fatalf("create: %q, %v", out, err)
	}
	out, err = run("", "--email", "ops@example.com", "--password-file", pwFile)
	if err != nil || !strings.Contains(out, "already a platform admin") {
		t.Fatalf("again: %q, %v", out, err)
	}
	out, err = run(pw+"\n", "--email", "second@example.com", "--password-file", "-")
	if err != nil || !strings.Contains(out, "created platform admin second@example.com") {
		t.Fatalf("password from stdin: %q, %v", out, err)
	}
	out, err = run("", "--list")
	if err != nil || !strings.Contains(out, "ops@example.com") || !strings.Contains(out, "second@example.com") {
		t.Fatalf("list: %q, %v", out, err)
	}
	out, err = run("", "--email", "second@example.com", "--demote")
	if err != nil || !strings.Contains(out, "no longer a platform admin") {
		t.Fatalf("demote: %q, %v", out, err)
	}
	for _, args := range [][]string{
		{},
		{"--email", "x@example.com"},           // no password file
		{"--list", "--email", "x@example.com"}, // list takes nothing else
		{"--email", "x@example.com", "--demote", "--password-file", pwFile},
		{"--email", "x@example.com", "--password-file", "/nonexistent"},
		{"extra"},
	} {
		if _, err := run("", args...); err == nil {
			t.Errorf("admin %q: no error", args)
		}
	}
	var out2, errOut bytes.Buffer
	if err := Main(ctx, []string{"--list"}, nil, nil, &out2, &errOut); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("without DATABASE_URL: %v", err)
	}
}
