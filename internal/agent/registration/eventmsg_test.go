package registration_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	wagent "github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/registration"
)

// TestEventProtoCutsLongMessages: the control plane refuses a batch with
// a message over registration.MaxEventMessage bytes, so the agent never
// sends one; the head (the cause) is kept, UTF-8 stays valid.
func TestEventProtoCutsLongMessages(t *testing.T) {
	short := "resume failed"
	if got := registration.EventProto(wagent.Event{ID: "a", Message: short}).GetMessage(); got != short {
		t.Errorf("short message = %q, want it unchanged", got)
	}
	exact := strings.Repeat("x", registration.MaxEventMessage)
	if got := registration.EventProto(wagent.Event{ID: "a", Message: exact}).GetMessage(); got != exact {
		t.Errorf("a message of exactly the limit was changed (%d bytes)", len(got))
	}
	for _, long := range []string{
		"wait for envd: deadline (console tail: " + strings.Repeat("Kernel panic ", 300) + ")",
		"é" + strings.Repeat("é€", 700), // multi-byte runes across the cut
	} {
		got := registration.EventProto(wagent.Event{ID: "a", Message: long}).GetMessage()
		if len(got) > registration.MaxEventMessage || !utf8.ValidString(got) || !strings.HasSuffix(got, "[...]") {
			t.Errorf("cut message: %d bytes, valid UTF-8 %v, ends %q", len(got), utf8.ValidString(got), got[max(0, len(got)-10):])
		}
		if !strings.HasPrefix(long, strings.TrimSuffix(got, " [...]")) {
			t.Errorf("cut message does not keep the head of the original")
		}
	}
}
