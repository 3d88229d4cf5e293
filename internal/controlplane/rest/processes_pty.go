package rest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// ptyControl is a text frame from a terminal client.
type ptyControl struct {
	Type string `json:"type"`
	Cols uint32 `json:"cols"`
	Rows uint32 `json:"rows"`
}

// openPTY serves an interactive terminal over WebSocket: binary frames
// carry terminal bytes both ways, the client's text frames resize it, and
// the server ends with {"type":"exit","exit_code":N}. The terminal's
// program is killed when the client goes away.
func (s *Server) openPTY(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	size := envdclient.PTYSize{Cols: 80, Rows: 24}
	for name, dst := range map[string]*uint32{"cols": &size.Cols, "rows": &size.Rows} {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n < 1 || n > 1000 {
				return invalid("%s %q: must be 1-1000", name, v)
			}
			*dst = uint32(n)
		}
	}
	run := envdclient.RunRequest{
		Cmd: "/bin/bash", Args: []string{"-l"}, PTY: &size, OpenStdin: true,
		Env: map[string]string{"TERM": "xterm-256color"},
	}
	if cmd := q.Get("cmd"); cmd != "" {
		if strings.ContainsRune(cmd, 0) {
			return invalid("cmd contains NUL")
		}
		run.Args = []string{"-l", "-c", cmd}
	}
	if !isWebSocket(r) {
		return errNeedWebSocket
	}
	c, err := s.acceptWS(w, r)
	if err != nil {
		return nil
	}
	defer c.CloseNow()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	run.Stdout = writerFunc(func(p []byte) (int, error) {
		if err := c.Write(ctx, websocket.MessageBinary, p); err != nil {
			return 0, err
		}
		return len(p), nil
	})
	p, err := ec.Start(ctx, run)
	if err != nil {
		s.wsFail(ctx, c, err)
		return nil
	}
	defer p.Close()

	var wg sync.WaitGroup
	inputErr := make(chan error, 1)
	wg.Go(func() {
		inputErr <- s.pumpTerminalInput(ctx, c, p)
		cancel()
	})
	defer wg.Wait()
	defer c.CloseNow()

	res, err := p.Wait(ctx)
	if err != nil {
		s.leave(ctx, p, true)
		if ctx.Err() == nil {
			s.wsFail(ctx, c, err)
			return nil
		}
		if ierr := <-inputErr; errors.Is(ierr, errdefs.ErrInvalidArgument) {
			s.wsFail(context.WithoutCancel(ctx), c, ierr)
		}
		return nil
	}
	code := res.ExitCode
	if err := writeFrame(ctx, c, procFrame{Type: "exit", ExitCode: &code}); err == nil {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
	return nil
}

// pumpTerminalInput types binary frames into the terminal and applies
// resize frames until the socket closes.
func (s *Server) pumpTerminalInput(ctx context.Context, c *websocket.Conn, p *envdclient.Process) error {
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if typ == websocket.MessageBinary {
			if err := p.SendStdin(ctx, data); err != nil {
				s.log.Debug("terminal input", "pid", p.PID(), "err", err)
			}
			continue
		}
		var ctl ptyControl
		if err := json.Unmarshal(data, &ctl); err != nil {
			return invalid("terminal control frame: %v", err)
		}
		if ctl.Type != "resize" {
			return invalid("terminal control frame type %q: want resize", ctl.Type)
		}
		if ctl.Cols < 1 || ctl.Cols > 1000 || ctl.Rows < 1 || ctl.Rows > 1000 {
			return invalid("resize to %dx%d: cols and rows must be 1-1000", ctl.Cols, ctl.Rows)
		}
		if err := p.Resize(ctx, envdclient.PTYSize{Cols: ctl.Cols, Rows: ctl.Rows}); err != nil {
			s.log.Debug("terminal resize", "pid", p.PID(), "err", err)
		}
	}
}
