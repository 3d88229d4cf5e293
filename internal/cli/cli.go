// Package cli is the wrenn command-line client: its commands, its
// configuration file and how it reports errors. cmd/wrenn only wires the
// process's stdio and environment to Run.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/version"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// Env is the process the CLI runs in: its streams and environment.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads an environment variable (os.Getenv in main).
	Getenv func(string) string
}

// app is one invocation: the environment, the global flags and the
// client built from them.
type app struct {
	env    Env
	apiURL string // --api-url
	apiKey string // --api-key
	caCert string // --ca-cert
}

// exitError ends the CLI with a code and no message: exec and shell exit
// with the remote command's code.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Run runs the CLI with args (without the program name) and returns the
// process exit code: the remote command's for exec and shell, 1 for any
// error, 0 otherwise. Errors are printed as one line on Stderr:
// "wrenn: <message> (<code>)".
func Run(ctx context.Context, args []string, env Env) int {
	a := &app{env: env}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(env.Stderr, errorLine(err))
	return 1
}

// errorLine is the one line an error is reported with.
func errorLine(err error) string {
	var apiErr *wrenn.Error
	if errors.As(err, &apiErr) {
		msg := strings.ReplaceAll(apiErr.Message, "\n", " ")
		return fmt.Sprintf("wrenn: %s (%s)", msg, apiErr.Code)
	}
	if errors.Is(err, context.Canceled) {
		return "wrenn: interrupted"
	}
	return "wrenn: " + strings.ReplaceAll(err.Error(), "\n", " ")
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "wrenn",
		Short:         "Manage Wrenn sandboxes, templates and hosts",
		Version:       version.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		// A bare `wrenn` prints help and succeeds.
		Args: cobra.NoArgs,
	}
	root.SetVersionTemplate("wrenn {{.Version}}\n")
	root.PersistentFlags().StringVar(&a.apiURL, "api-url", "", "API address (default: $WRENN_API_URL, the config file, "+wrenn.DefaultBaseURL+")")
	root.PersistentFlags().StringVar(&a.apiKey, "api-key", "", "API key (default: $WRENN_API_KEY, then the config file)")
	root.PersistentFlags().StringVar(&a.caCert, "ca-cert", "", "PEM CA certificate to trust the API's HTTPS certificate by, beside the system roots, e.g. a control plane run with WRENN_TLS=self-signed (default: $WRENN_CA_CERT, then the config file)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.AddCommand(a.loginCommand(), a.sandboxCommand(), a.templateCommand(), a.hostCommand())
	return root
}

// client builds an SDK client from flags, environment and config file.
func (a *app) client() (*wrenn.Client, error) {
	s, err := a.settings()
	if err != nil {
		return nil, err
	}
	if s.APIKey == "" {
		return nil, errors.New("no API key: run `wrenn login`, set WRENN_API_KEY or pass --api-key")
	}
	hc, err := httpClient(s)
	if err != nil {
		return nil, err
	}
	return wrenn.NewClient(
		wrenn.WithEnv(func(string) string { return "" }),
		wrenn.WithBaseURL(s.APIURL),
		wrenn.WithAPIKey(s.APIKey),
		wrenn.WithUserAgent("wrenn-cli/"+version.Version),
		wrenn.WithHTTPClient(hc),
	)
}

// httpClient is the HTTP client for the API: the default one, or one that
// also trusts the CA certificate file of --ca-cert. No timeout: exec,
// watch and file transfers stream for as long as they need.
func httpClient(s fileConfig) (*http.Client, error) {
	if s.CACert == "" {
		return &http.Client{}, nil
	}
	pemBytes, err := os.ReadFile(s.CACert)
	if err != nil {
		return nil, fmt.Errorf("CA certificate (--ca-cert, WRENN_CA_CERT): %w", err)
	}
	hc, err := capin.Client(capin.Trust{CAPEM: pemBytes}, s.APIURL, 0)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", s.CACert, err)
	}
	return hc, nil
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// terminalFd returns the file descriptor behind v when it is a terminal.
func terminalFd(v any) (int, bool) {
	f, ok := v.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}
