// Package process serves envd's process.Process Connect service: it starts
// processes in the guest, streams their output, and lets clients re-attach,
// send input and signals, and resize PTYs.
package process

import (
	"context"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/process"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

var _ processconnect.ProcessHandler = (*Service)(nil)

// Service implements processconnect.ProcessHandler.
type Service struct {
	logger *slog.Logger
	defs   *defaults.Defaults
}

// NewService returns a service that runs processes with the given defaults.
func NewService(logger *slog.Logger, defs *defaults.Defaults) *Service {
	return &Service{logger: logger, defs: defs}
}

// Close kills every process the service started and waits for their reapers.
func (s *Service) Close() {}

var errTODO = errdefs.New(errdefs.ErrUnavailable, "not implemented yet")

func (s *Service) List(context.Context, *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	return nil, errdefs.ToConnect(errTODO)
}
func (s *Service) Connect(context.Context, *connect.Request[pb.ConnectRequest], *connect.ServerStream[pb.ConnectResponse]) error {
	return errdefs.ToConnect(errTODO)
}
func (s *Service) Start(context.Context, *connect.Request[pb.StartRequest], *connect.ServerStream[pb.StartResponse]) error {
	return errdefs.ToConnect(errTODO)
}
func (s *Service) Update(context.Context, *connect.Request[pb.UpdateRequest]) (*connect.Response[pb.UpdateResponse], error) {
	return nil, errdefs.ToConnect(errTODO)
}
func (s *Service) StreamInput(context.Context, *connect.ClientStream[pb.StreamInputRequest]) (*connect.Response[pb.StreamInputResponse], error) {
	return nil, errdefs.ToConnect(errTODO)
}
func (s *Service) SendInput(context.Context, *connect.Request[pb.SendInputRequest]) (*connect.Response[pb.SendInputResponse], error) {
	return nil, errdefs.ToConnect(errTODO)
}
func (s *Service) SendSignal(context.Context, *connect.Request[pb.SendSignalRequest]) (*connect.Response[pb.SendSignalResponse], error) {
	return nil, errdefs.ToConnect(errTODO)
}
func (s *Service) CloseStdin(context.Context, *connect.Request[pb.CloseStdinRequest]) (*connect.Response[pb.CloseStdinResponse], error) {
	return nil, errdefs.ToConnect(errTODO)
}
