// Command wrenn-up runs a single-node Wrenn in the foreground: PostgreSQL,
// the control plane and the host agent, with this machine registered as a
// host. It prints the API URL, an admin API key and a first command to try.
// Ctrl-C destroys the sandboxes it created and stops everything; the next
// run reuses the database, keys and images under WRENN_DIR. A daemon that
// dies meanwhile is restarted, and a line says so; one that keeps dying
// stops everything (devstack.RestartPolicy).
//
// `make up` builds everything and runs it as root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
)

func main() {
	var cfg devstack.Config
	flag.BoolVar(&cfg.NoAgent, "no-agent", false, "start PostgreSQL and the control plane only (make dev)")
	flag.BoolVar(&cfg.TLS, "tls", false, "serve the API over HTTPS with a certificate from the cluster CA (WRENN_TLS=self-signed)")
	keep := flag.Bool("keep-sandboxes", false, "on exit, leave sandboxes running for the next start to re-adopt")
	flag.StringVar(&cfg.Dir, "dir", envOr("WRENN_DIR", "/var/lib/wrenn"), "state directory (WRENN_DIR)")
	flag.StringVar(&cfg.BinDir, "bin-dir", "builds", "directory holding wrenn-cp and wrenn-agent")
	flag.StringVar(&cfg.CPAddr, "listen", envOr("WRENN_CP_LISTEN_ADDR", "127.0.0.1:8000"), "control plane address")
	flag.StringVar(&cfg.AgentAddr, "agent-address", envOr("WRENN_HOST_LISTEN_ADDR", "127.0.0.1:50051"), "host agent address")
	flag.StringVar(&cfg.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "use this PostgreSQL instead of a private cluster under WRENN_DIR/pg")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "wrenn-up:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg devstack.Config, keep bool) error {
	if os.Geteuid() != 0 && !cfg.NoAgent {
		return fmt.Errorf("run as root: the host agent needs /dev/kvm, network namespaces and cgroups")
	}
	start := time.Now()
	st, err := devstack.Up(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf(`
Wrenn is up (%s).

  Dashboard: %s/   (log in as the admin below)
  API:      %s   (docs: %s/docs)
  API key:  %s
  Admin:    %s / %s

Try:
  export WRENN_API_URL=%s WRENN_API_KEY=%s
  builds/wrenn sandbox create
  builds/wrenn sandbox exec <id> -- uname -a

E2B's SDKs (Python and JavaScript), unchanged:
  export E2B_API_URL=%s E2B_SANDBOX_URL=%s E2B_API_KEY=%s

Logs: %s/logs/. Ctrl-C stops everything.
`, time.Since(start).Round(100*time.Millisecond), st.URL, st.URL, st.URL, st.Admin.APIKey, st.Admin.Email, st.Admin.Password,
		st.URL, st.Admin.APIKey, st.URL, st.URL, st.Admin.E2BKey, cfg.Dir)
	if st.CACert != "" {
		fmt.Printf("HTTPS with the cluster CA %s: export WRENN_CA_CERT=%s\n", st.CACertHash, st.CACert)
	}

	waitErr := st.Wait(ctx)
	stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !keep && waitErr == nil {
		n, err := st.DestroySandboxes(stopCtx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wrenn-up: destroy sandboxes:", err)
		} else if n > 0 {
			fmt.Printf("==> destroyed %d sandboxes\n", n)
		}
	}
	fmt.Println("==> stopping")
	if err := st.Close(stopCtx); err != nil {
		return err
	}
	return waitErr
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
