package rpc

import (
	"context"
	"io"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// Copies moves built templates between hosts (*agent.Manager).
type Copies interface {
	ExportTemplate(ctx context.Context, team, name string, w io.Writer) error
	ImportTemplate(ctx context.Context, team, name, digest string, r io.Reader) error
}

var _ Copies = (*agent.Manager)(nil)

// exportChunk is the size of one ExportTemplate message.
const exportChunk = 1 << 20

func (s *service) ExportTemplate(ctx context.Context, req *connect.Request[hostagentv1.ExportTemplateRequest], stream *connect.ServerStream[hostagentv1.TemplateChunk]) error {
	if s.copies == nil {
		return connect.NewError(connect.CodeUnimplemented, errdefs.New(errdefs.ErrFailedPrecondition, "this host does not copy templates"))
	}
	w := &chunkWriter{send: func(b []byte) error { return stream.Send(&hostagentv1.TemplateChunk{Data: b}) }}
	if err := s.copies.ExportTemplate(ctx, req.Msg.GetTeamId(), req.Msg.GetName(), w); err != nil {
		return errdefs.ToConnect(err)
	}
	if err := w.flush(); err != nil {
		return errdefs.ToConnect(err)
	}
	return nil
}

// chunkWriter sends what is written in messages of exportChunk bytes.
type chunkWriter struct {
	send func([]byte) error
	buf  []byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(exportChunk-len(c.buf), len(p))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == exportChunk {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.send(c.buf)
	c.buf = make([]byte, 0, exportChunk)
	return err
}

func (s *service) ImportTemplate(ctx context.Context, stream *connect.ClientStream[hostagentv1.ImportTemplateRequest]) (*connect.Response[hostagentv1.ImportTemplateResponse], error) {
	if s.copies == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errdefs.New(errdefs.ErrFailedPrecondition, "this host does not copy templates"))
	}
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "import template: no data"))
	}
	first := stream.Msg()
	r := &streamReader{cur: first.GetData(), next: func() ([]byte, bool, error) {
		if !stream.Receive() {
			return nil, false, stream.Err()
		}
		return stream.Msg().GetData(), true, nil
	}}
	if err := s.copies.ImportTemplate(ctx, first.GetTeamId(), first.GetName(), first.GetDigest(), r); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.ImportTemplateResponse{}), nil
}

// streamReader reads a client stream's chunks as one stream.
type streamReader struct {
	cur  []byte
	next func() ([]byte, bool, error)
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		b, ok, err := r.next()
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, io.EOF
		}
		r.cur = b
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
