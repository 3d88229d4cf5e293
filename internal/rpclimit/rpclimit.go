// Package rpclimit bounds what a Connect client reads from a peer it does
// not trust: envd (a tenant is root in its guest and can replace envd with
// anything) and host agents (a BYOC host is a tenant's machine).
//
// Connect's own WithReadMaxBytes caps one message, but on an oversized
// message it keeps reading to throw the rest away (up to the declared 4 GiB
// of a stream envelope, or to the end of an endless unary body), and a
// small message can still decode into a huge one: every 2-byte empty entry
// of a repeated field becomes a Go struct of ~200 bytes. So a bounded client
// here
//
//   - caps each message (unary reply, or one stream envelope) at
//     MaxMessageBytes, and fails as soon as a unary body runs past it or a
//     stream envelope declares more, without reading on (Doer);
//   - refuses a message with more than MaxRepeated entries in its repeated
//     and map fields, nested ones included, before it is decoded (the
//     codec walks the wire bytes guided by the message's descriptor);
//   - reports every such failure as CodeResourceExhausted wrapping a
//     *LimitError (errdefs.ErrResourceExhausted), never as a protocol error;
//   - reports a reply it cannot parse (a broken envelope, a stream cut
//     short, bytes that are no protobuf) as CodeUnavailable: the peer
//     misbehaved, which is neither the caller's mistake (Connect says
//     InvalidArgument) nor the caller's bug (Internal, a 500).
//
// Streams are not capped in total: process output may rightly flow for
// hours; each of its messages is bounded and consumed as it arrives.
package rpclimit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Limits are the bounds of one kind of peer.
type Limits struct {
	// Peer names the peer in errors ("envd", "host agent").
	Peer string
	// MaxMessageBytes caps one message, compressed or not.
	MaxMessageBytes int
	// MaxRepeated caps the entries of all repeated and map fields of one
	// message together, nested ones included (list replies).
	MaxRepeated int
}

// LimitError is a reply over one of the Limits. It unwraps to
// errdefs.ErrResourceExhausted.
type LimitError struct {
	Peer  string
	What  string // "message bytes", "list entries"
	Got   int64  // what the peer sent or declared; 0 when unknown (endless)
	Limit int64
}

func (e *LimitError) Error() string {
	if e.Got > 0 {
		return fmt.Sprintf("%s reply over the limit: %d %s (at most %d)", e.Peer, e.Got, e.What, e.Limit)
	}
	return fmt.Sprintf("%s reply over the limit: more than %d %s", e.Peer, e.Limit, e.What)
}

func (e *LimitError) Unwrap() error { return errdefs.ErrResourceExhausted }

// ClientOptions are the Connect client options that apply l: message cap,
// the counting codec and the error classification.
func (l Limits) ClientOptions() []connect.ClientOption {
	return []connect.ClientOption{
		connect.WithReadMaxBytes(l.MaxMessageBytes),
		connect.WithCodec(countingCodec{l}),
		connect.WithInterceptors(classifier{peer: l.Peer}),
	}
}

// HandlerOptions are the Connect handler options that apply l to what a
// peer sends a server: message cap and the counting codec (a few MiB of
// nested empty entries would otherwise decode to hundreds of MiB).
func (l Limits) HandlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(l.MaxMessageBytes),
		connect.WithCodec(countingCodec{l}),
	}
}

// Doer wraps next so every response body it returns fails fast once it
// runs past l: a unary body past MaxMessageBytes, a stream envelope
// declaring more. Use it only for Connect clients (plain downloads are
// legitimately unbounded).
func (l Limits) Doer(next connect.HTTPClient) connect.HTTPClient {
	return doer{next: next, l: l}
}

type doer struct {
	next connect.HTTPClient
	l    Limits
}

func (d doer) Do(r *http.Request) (*http.Response, error) {
	resp, err := d.next.Do(r)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/connect+") {
		resp.Body = &envelopeGuard{rc: resp.Body, l: d.l}
	} else {
		// Unary replies and error bodies: one message (the error body of a
		// unary call is JSON under the same cap in Connect).
		resp.Body = &totalGuard{rc: resp.Body, l: d.l, left: int64(d.l.MaxMessageBytes)}
	}
	return resp, nil
}

// totalGuard fails once more than left bytes are read.
type totalGuard struct {
	rc   io.ReadCloser
	l    Limits
	left int64
}

func (g *totalGuard) Read(p []byte) (int, error) {
	if g.left < 0 {
		return 0, g.l.tooBig(0)
	}
	// Read one byte past the allowance to tell "exactly at the cap" from
	// "over it".
	if int64(len(p)) > g.left+1 {
		p = p[:g.left+1]
	}
	n, err := g.rc.Read(p)
	g.left -= int64(n)
	if g.left < 0 {
		return 0, g.l.tooBig(0)
	}
	return n, err
}

func (g *totalGuard) Close() error { return g.rc.Close() }

// envelopeGuard follows Connect's stream framing (1 flag byte, 4-byte
// big-endian length, payload) and fails on the prefix of an envelope that
// declares more than the cap, before its payload is read.
type envelopeGuard struct {
	rc     io.ReadCloser
	l      Limits
	prefix [5]byte
	have   int   // bytes of the current prefix seen
	left   int64 // payload bytes of the current envelope still to come
	err    error
}

func (g *envelopeGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.rc.Read(p)
	if serr := g.scan(p[:n]); serr != nil {
		g.err = serr
		return 0, serr
	}
	return n, err
}

func (g *envelopeGuard) scan(b []byte) error {
	for len(b) > 0 {
		if g.left > 0 {
			k := min(int64(len(b)), g.left)
			g.left -= k
			b = b[k:]
			continue
		}
		k := copy(g.prefix[g.have:], b)
		g.have += k
		b = b[k:]
		if g.have == len(g.prefix) {
			size := int64(binary.BigEndian.Uint32(g.prefix[1:]))
			if size > int64(g.l.MaxMessageBytes) {
				return g.l.tooBig(size)
			}
			g.left, g.have = size, 0
		}
	}
	return nil
}

func (g *envelopeGuard) Close() error { return g.rc.Close() }

func (l Limits) tooBig(got int64) error {
	return &LimitError{Peer: l.Peer, What: "message bytes", Got: got, Limit: int64(l.MaxMessageBytes)}
}

// countingCodec is Connect's binary protobuf codec with a look at the wire
// first: a message with more than MaxRepeated list or map entries is
// refused before it is decoded.
type countingCodec struct{ l Limits }

func (countingCodec) Name() string { return "proto" }

func (countingCodec) IsBinary() bool { return true }

func (countingCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a protobuf message", m)
	}
	return proto.Marshal(pm)
}

func (countingCodec) MarshalStable(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a protobuf message", m)
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(pm)
}

func (c countingCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal into %T: not a protobuf message", m)
	}
	if c.l.MaxRepeated > 0 {
		total := 0
		if err := c.l.countEntries(data, pm.ProtoReflect().Descriptor(), 0, &total); err != nil {
			return err
		}
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

// maxNesting bounds how deep countEntries follows nested messages; the
// protocols here nest a few levels, and deeper input is no reply of theirs
// (proto.Unmarshal has its own limit of 10,000).
const maxNesting = 32

// countEntries adds the entries of b's repeated and map fields (md's
// message), nested messages included, to total, and fails once it passes
// MaxRepeated. Packed scalars are not counted: each costs at most 8 bytes
// decoded for at least 1 on the wire. Malformed input is left to
// proto.Unmarshal to report.
func (l Limits) countEntries(b []byte, md protoreflect.MessageDescriptor, depth int, total *int) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil
		}
		val := b[:n]
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil {
			continue // unknown fields are kept as raw bytes: no amplification
		}
		isMsg := fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
		if (fd.IsList() || fd.IsMap()) && (typ != protowire.BytesType || isMsg || fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind) {
			*total++
			if *total > l.MaxRepeated {
				return &LimitError{Peer: l.Peer, What: "list entries", Limit: int64(l.MaxRepeated)}
			}
		}
		if isMsg && typ == protowire.BytesType && depth < maxNesting {
			inner, _ := protowire.ConsumeBytes(val)
			if err := l.countEntries(inner, fd.Message(), depth+1, total); err != nil {
				return err
			}
		}
	}
	return nil
}

// classifier turns a *LimitError anywhere in a call's error (Connect wraps
// codec and body-read errors as InvalidArgument or Unknown) into
// CodeResourceExhausted, and the client's own complaints about a reply it
// could not parse into CodeUnavailable, so errdefs.FromConnect sees what
// happened. Errors the peer sent (wire errors) keep their code.
type classifier struct{ peer string }

func (c classifier) classify(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var le *LimitError
	if errors.As(err, &le) {
		if connect.CodeOf(err) == connect.CodeResourceExhausted {
			return err
		}
		return connect.NewError(connect.CodeResourceExhausted, le)
	}
	if connect.IsWireError(err) {
		return err
	}
	switch connect.CodeOf(err) {
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeInvalidArgument:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s sent a reply that cannot be read: %w", c.peer, err))
	}
	return err
}

func (c classifier) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		return resp, c.classify(err)
	}
}

func (c classifier) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return classifiedConn{StreamingClientConn: next(ctx, spec), c: c}
	}
}

func (classifier) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

type classifiedConn struct {
	connect.StreamingClientConn
	c classifier
}

func (c classifiedConn) Receive(m any) error { return c.c.classify(c.StreamingClientConn.Receive(m)) }

func (c classifiedConn) CloseResponse() error {
	return c.c.classify(c.StreamingClientConn.CloseResponse())
}
