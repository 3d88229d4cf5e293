// Command envd is Wrenn's guest agent. In a sandbox it runs as root under
// tini, started by wrenn-init, and listens on TCP 49983; with --dev it runs
// as an ordinary process on a developer's machine, on loopback only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/wrenn/wrenn/internal/envd"
	"github.com/wrenn/wrenn/internal/envd/portfwd"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	port := fs.Int("port", envd.DefaultPort, "TCP port to listen on (0: any free port, logged at start)")
	dev := fs.Bool("dev", false, "run as an ordinary process on a developer machine: listen on 127.0.0.1, default user is the current user, never set the clock, no port forwarding unless --forward-addr is given")
	userName := fs.String("user", "user", "default user for processes and files (with --dev: the current user)")
	forward := fs.String("forward-addr", "", "comma-separated addresses loopback servers are forwarded to (default: eth0's IPv4 addresses in a guest, none with --dev)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println(version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *port < 0 || *port > 65535 {
		return fmt.Errorf("--port %d is not a TCP port", *port)
	}

	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("version", version)

	userSet := false
	fs.Visit(func(f *flag.Flag) { userSet = userSet || f.Name == "user" })
	cfg := envd.Config{Addr: ":" + strconv.Itoa(*port), Dev: *dev, User: *userName}
	if *dev {
		// An unauthenticated exec server must not be reachable from the LAN.
		cfg.Addr = "127.0.0.1:" + strconv.Itoa(*port)
		if !userSet {
			u, err := user.Current()
			if err != nil {
				return fmt.Errorf("look up current user: %w", err)
			}
			cfg.User = u.Username
		}
	}

	switch {
	case *forward != "":
		for _, s := range strings.Split(*forward, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("--forward-addr: %w", err)
			}
			cfg.ForwardAddrs = append(cfg.ForwardAddrs, a)
		}
	case !*dev:
		addrs, err := portfwd.GuestAddrs("eth0")
		if err != nil {
			// envd must still come up so the sandbox is usable; only
			// port forwarding is lost.
			logger.Warn("port forwarding disabled: no forward address", "err", err)
		}
		cfg.ForwardAddrs = addrs
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return envd.Run(ctx, cfg, logger)
}
