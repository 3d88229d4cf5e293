// Command wrenn-init is PID 1 of a Wrenn guest; see package guestinit. The
// kernel starts it with init=/usr/local/sbin/wrenn-init.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/wrenn/wrenn/internal/guestinit"
)

func main() {
	if os.Getpid() != 1 {
		// It mounts, reconfigures the network and reboots: never on a host.
		fmt.Fprintln(os.Stderr, "wrenn-init: must run as PID 1 of a Wrenn guest, refusing to start")
		os.Exit(2)
	}
	log := slog.New(guestinit.NewConsoleHandler(os.Stdout))
	err := guestinit.Run(context.Background(), log)
	// Exiting would panic the kernel; wait for someone to kill the VM.
	log.Error("halted", "err", err)
	for {
		time.Sleep(time.Hour)
	}
}
