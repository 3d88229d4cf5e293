package rpclimit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/proto/envd/filesystem"
	"github.com/wrenn/wrenn/proto/envd/process"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
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

func TestCountEntries(t *testing.T) {
	l := Limits{Peer: "test", MaxRepeated: 3}
	count := func(m proto.Message) error {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		return l.countEntries(b, m.ProtoReflect().Descriptor(), 0, &total)
	}
	three := &filesystem.ListDirResponse{Entries: []*filesystem.EntryInfo{{}, {Name: "a"}, {}}}
	if err := count(three); err != nil {
		t.Fatalf("3 entries: %v", err)
	}
	three.Entries = append(three.Entries, &filesystem.EntryInfo{})
	if err := count(three); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("4 entries: %v; want resource exhausted", err)
	}
	// Nested lists and maps count too: 1 process + 2 args + 1 env.
	nested := &process.ListResponse{Processes: []*process.ProcessInfo{{Config: &process.ProcessConfig{
		Cmd: "x", Args: []string{"a", "b"}, Envs: map[string]string{"K": "V"}}}}}
	if err := count(nested); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("1 process with 2 args and 1 env under a limit of 3: %v; want resource exhausted", err)
	}
	nested.Processes[0].Config.Envs = nil
	if err := count(nested); err != nil {
		t.Fatalf("1 process with 2 args: %v", err)
	}
}

// TestHandlerOptionsRefuseBeforeDecode: a server built with HandlerOptions
// refuses a request with more list entries than allowed before its
// handler runs (the stub handler would answer Unimplemented).
func TestHandlerOptionsRefuseBeforeDecode(t *testing.T) {
	l := Limits{Peer: "test", MaxMessageBytes: 1 << 20, MaxRepeated: 3}
	mux := http.NewServeMux()
	mux.Handle(processconnect.NewProcessHandler(processconnect.UnimplementedProcessHandler{}, l.HandlerOptions()...))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := processconnect.NewProcessClient(srv.Client(), srv.URL)
	start := func(args ...string) error {
		stream, err := client.Start(context.Background(), connect.NewRequest(&process.StartRequest{
			Process: &process.ProcessConfig{Cmd: "x", Args: args}}))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
		}
		return stream.Err()
	}
	err := start("a", "b", "c", "d")
	if connect.CodeOf(err) == connect.CodeUnimplemented || err == nil || !strings.Contains(err.Error(), "list entries") {
		t.Fatalf("4 args under a limit of 3: %v; want a refusal naming list entries", err)
	}
	if err := start("a", "b", "c"); connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("3 args under a limit of 3: %v; want the handler's Unimplemented", err)
	}
}
