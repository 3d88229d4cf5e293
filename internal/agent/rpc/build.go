package rpc

import (
	"context"
	"io"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/templates/builder"
	"github.com/wrenn/wrenn/internal/templates/hostbuild"
	"github.com/wrenn/wrenn/internal/templates/ociimage"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// Builds runs template builds on this host (*hostbuild.Service).
type Builds interface {
	SaveContext(ctx context.Context, build string, r io.Reader) (int64, error)
	Build(ctx context.Context, req hostbuild.Request, emit func(builder.Event)) (builder.Result, error)
}

var _ Builds = (*hostbuild.Service)(nil)

func (s *service) UploadBuildContext(ctx context.Context, stream *connect.ClientStream[hostagentv1.UploadBuildContextRequest]) (*connect.Response[hostagentv1.UploadBuildContextResponse], error) {
	if s.builds == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errdefs.New(errdefs.ErrFailedPrecondition, "this host does not build templates"))
	}
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "upload build context: no data"))
	}
	build := stream.Msg().GetBuildId()
	if err := needID("build_id", build); err != nil {
		return nil, err
	}
	r := &streamReader{cur: stream.Msg().GetData(), next: func() ([]byte, bool, error) {
		if !stream.Receive() {
			return nil, false, stream.Err()
		}
		if stream.Msg().GetBuildId() != build {
			return nil, false, errdefs.New(errdefs.ErrInvalidArgument, "upload build context: chunks of two builds in one upload")
		}
		return stream.Msg().GetData(), true, nil
	}}
	n, err := s.builds.SaveContext(ctx, build, r)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.UploadBuildContextResponse{Bytes: n}), nil
}

func (s *service) BuildTemplate(ctx context.Context, req *connect.Request[hostagentv1.BuildTemplateRequest], stream *connect.ServerStream[hostagentv1.BuildTemplateResponse]) error {
	if s.builds == nil {
		return connect.NewError(connect.CodeUnimplemented, errdefs.New(errdefs.ErrFailedPrecondition, "this host does not build templates"))
	}
	m := req.Msg
	if err := needID("build_id", m.GetBuildId()); err != nil {
		return err
	}
	pol, err := policyFromProto(m.GetNetwork())
	if err != nil {
		return errdefs.ToConnect(err)
	}
	auth := map[string]ociimage.Credential{}
	for _, c := range m.GetCredentials() {
		auth[c.GetRegistry()] = ociimage.Credential{Username: c.GetUsername(), Password: c.GetPassword(), Token: c.GetToken()}
	}
	// Sends happen from the build's goroutines one at a time (the
	// builder serialises its events); a failed send (the control plane
	// went away) cancels the build.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	emit := func(e builder.Event) {
		err := stream.Send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Log{Log: &hostagentv1.BuildLog{
			Step: int32(e.Step), Steps: int32(e.Steps), Phase: e.Phase, Cached: e.Cached, Text: e.Text,
		}}})
		if err != nil {
			cancel(err)
		}
	}
	res, err := s.builds.Build(ctx, hostbuild.Request{
		Build: m.GetBuildId(), TeamID: m.GetTeamId(), Name: m.GetName(), Version: int(m.GetVersion()),
		RecipeFile: m.GetRecipeFile(), Args: m.GetBuildArgs(), BaseTemplate: m.GetBaseTemplate(),
		Network: pol, Auth: auth,
	}, emit)
	if err != nil {
		return errdefs.ToConnect(err)
	}
	c := res.Config
	return stream.Send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Result{Result: &hostagentv1.BuildResult{
		ImageBytes: res.ImageBytes, DiskBytes: res.DiskBytes, Digest: res.Digest, Snapshot: res.Snapshot,
		Steps: int32(res.Steps), CachedSteps: int32(res.Cached), Vcpus: int32(c.VCPUs), MemoryMb: int32(c.MemoryMB),
		DiskMb: int32(c.DiskMB), DurationSeconds: res.Duration.Seconds(), User: c.User, Workdir: c.Workdir, Start: c.Start,
	}}})
}
