package rpclimit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func frame(size int) []byte {
	b := make([]byte, 5+size)
	binary.BigEndian.PutUint32(b[1:5], uint32(size))
	return b
}

// The envelope guard must follow frames whose prefixes are split across
// reads (one byte at a time here) and refuse the first oversized prefix.
func TestEnvelopeGuard(t *testing.T) {
	l := Limits{Peer: "test", MaxMessageBytes: 100}
	ok := append(append(frame(0), frame(100)...), frame(7)...)
	g := &envelopeGuard{rc: io.NopCloser(iotest.OneByteReader(bytes.NewReader(ok))), l: l}
	if got, err := io.ReadAll(g); err != nil || !bytes.Equal(got, ok) {
		t.Fatalf("frames within the cap: read %d bytes, %v; want %d, nil", len(got), err, len(ok))
	}

	bad := append(frame(3), frame(101)...)
	g = &envelopeGuard{rc: io.NopCloser(iotest.OneByteReader(bytes.NewReader(bad))), l: l}
	_, err := io.ReadAll(g)
	var le *LimitError
	if !errors.As(err, &le) || le.Got != 101 || !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("oversized frame: %v; want a LimitError for 101 bytes", err)
	}
}

func TestTotalGuard(t *testing.T) {
	l := Limits{Peer: "test", MaxMessageBytes: 10}
	g := &totalGuard{rc: io.NopCloser(bytes.NewReader(make([]byte, 10))), l: l, left: 10}
	if got, err := io.ReadAll(g); err != nil || len(got) != 10 {
		t.Fatalf("exactly the cap: %d bytes, %v", len(got), err)
	}
	g = &totalGuard{rc: io.NopCloser(bytes.NewReader(make([]byte, 11))), l: l, left: 10}
	if _, err := io.ReadAll(g); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("one byte over the cap: %v; want resource exhausted", err)
	}
}

func TestCheckRepeated(t *testing.T) {
	l := Limits{Peer: "test", MaxRepeated: 3}
	three := []byte{0x0a, 0, 0x0a, 0, 0x0a, 0, 0x10, 1, 0x10, 1}
	if err := l.checkRepeated(three); err != nil {
		t.Fatalf("3 entries of field 1 and 2 of field 2: %v", err)
	}
	if err := l.checkRepeated(append(three, 0x0a, 0)); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("4 entries: %v; want resource exhausted", err)
	}
}
