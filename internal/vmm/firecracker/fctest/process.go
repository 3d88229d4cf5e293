package fctest

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// ProcessEnv, set to "1" in a test binary's environment, makes TestMain run
// Main instead of the tests: the binary then acts as a firecracker process.
const ProcessEnv = "WRENN_FCTEST_PROCESS"

// FailEnv lists calls the process fake fails, as Options.Fail does:
// "PUT /drives/rootfs=message;PATCH /vm=other message".
const FailEnv = "WRENN_FCTEST_FAIL"

// IgnoreCADEnv, set to "1", makes the process fake's guest ignore
// SendCtrlAltDel (Options.IgnoreCtrlAltDel).
const IgnoreCADEnv = "WRENN_FCTEST_IGNORE_CAD"

// RequestLogName is the file, beside the api socket, to which the process
// fake appends each answered request as one JSON line (Request with PID).
const RequestLogName = "fctest-requests.jsonl"

// Main runs a fake firecracker process: it parses firecracker's --api-sock
// and --id flags, serves a Server on the socket, writes the guest console to
// stdout, and returns the exit code when the fake guest would end the
// process (SIGTERM and SIGKILL end it as they end Firecracker).
func Main(args []string) int {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	sock := fs.String("api-sock", "/run/firecracker.socket", "api socket")
	id := fs.String("id", "anonymous-instance", "instance id")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Rust programs ignore SIGPIPE; so does this stand-in, so that console
	// writes with no reader fail with EPIPE instead of killing it.
	signal.Ignore(syscall.SIGPIPE)
	fail, err := parseFail(os.Getenv(FailEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fctest:", err)
		return 2
	}
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(*sock), RequestLogName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fctest:", err)
		return 1
	}
	defer logf.Close()

	var logMu sync.Mutex
	exitc := make(chan int, 1)
	pid := os.Getpid()
	srv := New(Options{
		ID:               *id,
		Fail:             fail,
		IgnoreCtrlAltDel: os.Getenv(IgnoreCADEnv) == "1",
		Console:          os.Stdout,
		Record: func(r Request) {
			r.PID = pid
			b, _ := json.Marshal(r)
			logMu.Lock()
			defer logMu.Unlock()
			_, _ = logf.Write(append(b, '\n'))
		},
		OnExit: func(code int) { exitc <- code },
	})
	hs, err := srv.Listen(*sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fctest:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "fctest: firecracker %s serving %s\n", *id, *sock)
	code := <-exitc
	_ = hs.Close()
	_ = os.Remove(*sock)
	return code
}

func parseFail(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	m := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		call, msg, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not CALL=message", FailEnv, part)
		}
		m[call] = msg
	}
	return m, nil
}

// ReadRequestLog returns the requests the process fakes serving sockets in
// dir have answered, in order.
func ReadRequestLog(dir string) ([]Request, error) {
	f, err := os.Open(filepath.Join(dir, RequestLogName))
	if err != nil {
		return nil, fmt.Errorf("read fctest request log: %w", err)
	}
	defer f.Close()
	var reqs []Request
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r Request
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("read fctest request log: %w", err)
		}
		reqs = append(reqs, r)
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read fctest request log: %w", err)
	}
	return reqs, nil
}
