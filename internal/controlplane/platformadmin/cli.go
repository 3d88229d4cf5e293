package platformadmin

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/dbmigrate"
	"github.com/wrenn/wrenn/internal/envfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// Usage is the synopsis of `wrenn-cp admin`.
const Usage = `Usage:
  wrenn-cp admin --email EMAIL --password-file FILE [--team NAME] [--reset-password]
      create EMAIL as a platform admin (with a team NAME, default "admin") or
      promote the existing user EMAIL; running it again changes nothing.
      FILE holds the password (one line; "-" reads standard input). For an
      existing user the password is changed only with --reset-password.
  wrenn-cp admin --email EMAIL --demote
      take platform rights away from EMAIL (their platform API keys lose them too).
  wrenn-cp admin --list
      print the platform admins.

DATABASE_URL comes from the environment or the env file (--env-file, default ./.env if present).
`

// Main runs `wrenn-cp admin` with args (after "admin") and environ
// (os.Environ() form); stdin is read for --password-file -. It prints
// what it did to stdout.
func Main(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("wrenn-cp admin", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { fmt.Fprint(stderr, Usage) }
	var (
		email, pwFile, team, envFile string
		reset, demote, list          bool
	)
	fset.StringVar(&email, "email", "", "the platform admin's email")
	fset.StringVar(&pwFile, "password-file", "", "file holding the password (- for standard input)")
	fset.StringVar(&team, "team", DefaultTeamName, "name of the team a new admin owns")
	fset.BoolVar(&reset, "reset-password", false, "set the password of an existing user too")
	fset.BoolVar(&demote, "demote", false, "take platform rights away instead")
	fset.BoolVar(&list, "list", false, "list the platform admins")
	fset.StringVar(&envFile, "env-file", "", "read DATABASE_URL from this file (default ./.env if present)")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errdefs.New(errdefs.ErrInvalidArgument, "wrenn-cp admin: %v", err)
	}
	bad := func(format string, a ...any) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "wrenn-cp admin: "+format+"\n%s", append(a, Usage)...)
	}
	switch {
	case fset.NArg() > 0:
		return bad("unexpected arguments %q", fset.Args())
	case list && (email != "" || demote || pwFile != ""):
		return bad("--list takes no other flag")
	case !list && email == "":
		return bad("--email is required")
	case demote && (pwFile != "" || reset):
		return bad("--demote takes no password")
	case !list && !demote && pwFile == "":
		return bad("--password-file is required")
	}
	dsn, err := databaseURL(environ, envFile)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer pool.Close()
	// The first command on a new installation may come before wrenn-cp
	// ever started.
	if err := dbmigrate.Up(ctx, pool); err != nil {
		return err
	}
	switch {
	case list:
		us, err := List(ctx, pool)
		if err != nil {
			return err
		}
		if len(us) == 0 {
			fmt.Fprintln(stdout, "no platform admins (make one with wrenn-cp admin --email EMAIL --password-file FILE)")
		}
		for _, u := range us {
			fmt.Fprintf(stdout, "%s\t%s\n", u.Email, u.ID)
		}
		return nil
	case demote:
		was, err := Demote(ctx, pool, email)
		if err != nil {
			return err
		}
		if was {
			fmt.Fprintf(stdout, "%s is no longer a platform admin\n", email)
		} else {
			fmt.Fprintf(stdout, "%s was not a platform admin\n", email)
		}
		return nil
	}
	pw, err := readPassword(pwFile, stdin)
	if err != nil {
		return err
	}
	res, err := Ensure(ctx, pool, Request{Email: email, Password: pw, ResetPassword: reset, TeamName: team})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}

// readPassword reads the first line of path ("-": r). A password never
// comes from a flag: command lines are visible to every user.
func readPassword(path string, r io.Reader) (string, error) {
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		defer f.Close()
		r = f
	}
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if err := checkPassword(pw); err != nil {
		return "", err
	}
	return pw, nil
}

// databaseURL is DATABASE_URL from environ, else from the env file.
func databaseURL(environ []string, envFile string) (string, error) {
	var file map[string]string
	var err error
	switch {
	case envFile != "":
		file, err = envfile.Read(envFile)
	default:
		file, err = envfile.Read(".env")
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("read env file: %w", err)
	}
	dsn := file["DATABASE_URL"]
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "DATABASE_URL="); ok {
			dsn = v
		}
	}
	if dsn == "" {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "wrenn-cp admin: DATABASE_URL is not set (environment or env file)")
	}
	return dsn, nil
}
