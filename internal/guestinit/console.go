package guestinit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
)

// ConsolePrefix starts every line wrenn-init writes to the console, so its
// lines can be told from the kernel's and envd's.
const ConsolePrefix = "wrenn-init: "

// ConsoleHandler is a slog.Handler for the serial console: one short line
// per record, "wrenn-init: [LEVEL ]message key=value ...", with no timestamp
// (the guest clock is meaningless this early; records carry uptime_ms).
// Debug records are dropped: every console byte is a VM exit.
type ConsoleHandler struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string // group prefix for keys, "g." or ""
	attrs  []byte // preformatted WithAttrs attributes
}

// NewConsoleHandler returns a handler writing to w.
func NewConsoleHandler(w io.Writer) *ConsoleHandler {
	return &ConsoleHandler{mu: &sync.Mutex{}, w: w}
}

// Enabled implements slog.Handler.
func (h *ConsoleHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

// Handle implements slog.Handler.
func (h *ConsoleHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	b.WriteString(ConsolePrefix)
	if r.Level != slog.LevelInfo {
		b.WriteString(r.Level.String())
		b.WriteByte(' ')
	}
	b.WriteString(r.Message)
	b.Write(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.prefix, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(b.Bytes())
	return err
}

// WithAttrs implements slog.Handler.
func (h *ConsoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b bytes.Buffer
	b.Write(h.attrs)
	for _, a := range as {
		appendAttr(&b, h.prefix, a)
	}
	h2 := *h
	h2.attrs = b.Bytes()
	return &h2
}

// WithGroup implements slog.Handler.
func (h *ConsoleHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

func appendAttr(b *bytes.Buffer, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, p, ga)
		}
		return
	}
	var s string
	if err, ok := a.Value.Any().(error); ok && a.Value.Kind() == slog.KindAny {
		s = err.Error()
	} else {
		s = a.Value.String()
	}
	b.WriteByte(' ')
	b.WriteString(prefix)
	b.WriteString(a.Key)
	b.WriteByte('=')
	if s == "" || strings.ContainsAny(s, " \t\n\"=\\") || !strconv.IsPrint(firstRune(s)) {
		s = strconv.Quote(s)
	}
	b.WriteString(s)
}

func firstRune(s string) rune {
	for _, r := range s {
		return r
	}
	return ' '
}

// uptimeMillis parses /proc/uptime ("12.34 56.78\n") into milliseconds since
// boot.
func uptimeMillis(procUptime string) (int64, error) {
	f, _, _ := strings.Cut(strings.TrimSpace(procUptime), " ")
	secs, frac, _ := strings.Cut(f, ".")
	s, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || s < 0 {
		return 0, fmt.Errorf("parse /proc/uptime %q: bad seconds", procUptime)
	}
	ms := s * 1000
	if frac != "" {
		// /proc/uptime has two decimals; read up to three as milliseconds.
		frac = (frac + "00")[:3]
		n, err := strconv.ParseInt(frac, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("parse /proc/uptime %q: bad fraction", procUptime)
		}
		ms += n
	}
	return ms, nil
}
