package sandboxes

// Template builds (docs/templates.md): a build is checked and placed here,
// then runs in the background on its host while its log goes to the store.
// The replica that runs a build renews its lease; the sweeper fails a
// build whose replica died (its host cancels the build when the stream
// from that replica ends).

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/scheduler"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	"github.com/wrenn/wrenn/internal/templates/recipe"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// Build statuses (template_builds.status).
const (
	BuildBuilding = "building"
	BuildReady    = "ready"
	BuildFailed   = "failed"
	BuildCanceled = "canceled"
	BuildRetired  = "retired"
)

const (
	// MaxConcurrentBuilds bounds a team's builds at once.
	MaxConcurrentBuilds = 2
	// KeptVersions is how many of a template's newest ready versions stay
	// creatable (name:N) whether sandboxes use them or not; older ones
	// are removed once no sandbox uses them.
	KeptVersions = 3
	// buildTimeout bounds one build (package installs under emulation
	// are slow).
	buildTimeout = 2 * time.Hour
	// buildLogFlush is how often a build's log lines go to the store.
	buildLogFlush = 250 * time.Millisecond
	// uploadChunk is one message of a context upload.
	uploadChunk = 1 << 20
	// buildBaseTemplate is the image a build from an OCI image needs on
	// its host (it supplies Wrenn's guest files).
	buildBaseTemplate = "minimal"
	// defaultBuildMemoryMB and defaultBuildDiskMB size the build VMs of a
	// recipe that names no size (hostbuild's defaults).
	defaultBuildMemoryMB = 1024
	defaultBuildDiskMB   = 4096
)

// BuildSpec is a checked build request.
type BuildSpec struct {
	// Name is the team's template name.
	Name string
	// Recipe is the parsed recipe (the caller checked it) and RecipeFile
	// its path in the context.
	Recipe     *recipe.Recipe
	RecipeFile string
	Args       map[string]string
	// Credentials are registry logins for FROM <image>: passed to the
	// host for this build, never stored.
	Credentials []*hostagentv1.RegistryCredential
	// ContextPath is the uploaded context (a tar file); the build owns it
	// from StartBuild on and removes it.
	ContextPath string
	// Network is the policy of the build's VMs (the team's).
	Network *Network
}

// StartBuild places a build, records it and starts it in the background.
func (s *Service) StartBuild(ctx context.Context, team uuid.UUID, spec BuildSpec) (store.TemplateBuild, error) {
	started := false
	defer func() {
		if !started {
			os.Remove(spec.ContextPath)
		}
	}()
	if err := s.checkBuildName(ctx, team, spec.Name); err != nil {
		return store.TemplateBuild{}, err
	}
	n, err := s.q.CountBuildingTemplates(ctx, team)
	if err != nil {
		return store.TemplateBuild{}, fmt.Errorf("count builds: %w", err)
	}
	if n >= MaxConcurrentBuilds {
		return store.TemplateBuild{}, errdefs.New(errdefs.ErrQuotaExceeded,
			"team limit of %d template builds at once reached: wait for one to finish", MaxConcurrentBuilds)
	}
	base, from, err := s.buildBase(ctx, team, spec.Recipe.From)
	if err != nil {
		return store.TemplateBuild{}, err
	}
	host, err := s.buildHost(ctx, team, base, spec.Recipe.Resources)
	if err != nil {
		return store.TemplateBuild{}, err
	}
	var b store.TemplateBuild
	for attempt := 0; ; attempt++ {
		v, err := s.q.NextTemplateVersion(ctx, store.NextTemplateVersionParams{TeamID: team, TemplateName: spec.Name})
		if err != nil {
			return store.TemplateBuild{}, fmt.Errorf("next template version: %w", err)
		}
		b, err = s.q.InsertTemplateBuild(ctx, store.InsertTemplateBuildParams{
			TeamID: team, TemplateName: spec.Name, Version: v, AgentName: "tb-" + RandomName(20), HostID: &host,
			FromRef: from, RecipeFile: spec.RecipeFile, Steps: int32(len(spec.Recipe.Steps)), Now: s.clk.Now(),
		})
		if err == nil {
			break
		}
		if !store.IsNoRows(err) || attempt == 3 {
			return store.TemplateBuild{}, fmt.Errorf("record build: %w", err)
		}
	}
	started = true
	s.builds.Add(1)
	go func() {
		defer s.builds.Done()
		s.runBuild(b, spec, base)
	}()
	return b, nil
}

// checkBuildName refuses a name that is a built-in template's or a
// snapshot template's, and a new name over the team's template limit.
func (s *Service) checkBuildName(ctx context.Context, team uuid.UUID, name string) error {
	t, err := s.q.GetTeamTemplate(ctx, store.GetTeamTemplateParams{TeamID: team, Name: name})
	switch {
	case err == nil:
		if t.BuildID == nil {
			return errdefs.New(errdefs.ErrAlreadyExists, "template %q is a snapshot template: build under another name", name)
		}
		return nil
	case !store.IsNoRows(err):
		return fmt.Errorf("look up template %s: %w", name, err)
	}
	builtins, err := s.q.BuiltinTemplates(ctx, team)
	if err != nil {
		return fmt.Errorf("list built-in templates: %w", err)
	}
	for _, b := range builtins {
		if b.Name == name {
			return errdefs.New(errdefs.ErrAlreadyExists, "template %q is a built-in template's name", name)
		}
	}
	return s.inTx(ctx, func(q *store.Queries) error {
		return s.quota.Admit(ctx, q, team, quota.Amount{Templates: 1})
	})
}

// buildBase resolves FROM: the base template as its host names it (the
// built-in image an OCI base needs, for an image) and FROM as recorded.
func (s *Service) buildBase(ctx context.Context, team uuid.UUID, from recipe.From) (TemplateRef, string, error) {
	if from.Image != "" {
		return TemplateRef{AgentName: buildBaseTemplate, Builtin: true}, from.Image, nil
	}
	name := from.Template
	if from.Version > 0 {
		name = fmt.Sprintf("%s:%d", from.Template, from.Version)
	}
	ref, err := s.ResolveTemplate(ctx, team, name)
	if err != nil {
		return TemplateRef{}, "", fmt.Errorf("FROM %s: %w", name, err)
	}
	return ref, name, nil
}

// buildHost picks the host a build runs on: the base template's, or the
// best one with room among those with the base image.
func (s *Service) buildHost(ctx context.Context, team uuid.UUID, base TemplateRef, res recipe.Resources) (uuid.UUID, error) {
	hosts, err := schedulerHosts(ctx, s.q, team)
	if err != nil {
		return uuid.UUID{}, err
	}
	mem, disk := res.MemoryMB, res.DiskMB
	if mem == 0 {
		mem = defaultBuildMemoryMB
	}
	if disk == 0 {
		disk = defaultBuildDiskMB
	}
	req := scheduler.Request{
		TeamID: team, VCPUs: max(res.VCPUs, 1), MemoryBytes: int64(mem) << 20, DiskBytes: int64(disk) << 20,
		Template: base.AgentName, Builtin: base.Builtin, Home: base.Home,
	}
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	ranked := scheduler.Rank(hosts, req, scheduler.Policy{}, rnd, 1)
	if len(ranked) == 0 {
		return uuid.UUID{}, errNoRoom
	}
	return ranked[0].ID, nil
}

// runBuild runs a recorded build on its host to the end and records how
// it ended.
func (s *Service) runBuild(b store.TemplateBuild, spec BuildSpec, base TemplateRef) {
	defer os.Remove(spec.ContextPath)
	ctx, cancel := context.WithTimeout(s.buildCtx, buildTimeout)
	defer cancel()
	log := s.log.With("build_id", b.ID, "template", b.TemplateName, "version", b.Version)
	logs := newBuildLog(s, b.ID)
	defer logs.close()
	stop := s.holdLease(ctx, "template build "+b.ID.String(), func(lctx context.Context, now time.Time) error {
		if err := s.q.RenewTemplateBuilds(lctx, store.RenewTemplateBuildsParams{Ids: []uuid.UUID{b.ID}, Now: now}); err != nil {
			return err
		}
		// A cancel (any replica's) ends the build here.
		cur, err := s.q.GetTemplateBuild(lctx, store.GetTemplateBuildParams{ID: b.ID, TeamID: b.TeamID, TemplateName: b.TemplateName})
		if err == nil && cur.Status != BuildBuilding {
			cancel()
		}
		return nil
	})
	defer stop()
	logs.add(&hostagentv1.BuildLog{Phase: "queued", Text: "building " + b.TemplateName + " version " + fmt.Sprint(b.Version)})
	res, err := s.buildOnHost(ctx, b, spec, base, logs)
	logs.flush()
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), storeRetry)
	defer fcancel()
	if err != nil {
		status := BuildFailed
		if s.buildCtx.Err() != nil {
			err = errdefs.New(errdefs.ErrUnavailable, "the control plane shut down during the build: build again")
		} else if errors.Is(err, context.Canceled) {
			status = BuildCanceled
		}
		msg := err.Error()
		logs.add(&hostagentv1.BuildLog{Phase: "error", Text: msg})
		logs.flush()
		log.Info("template build ended", "status", status, "err", err)
		if ferr := s.retryStore(fctx, func(c context.Context) error {
			_, err := s.q.FinishTemplateBuild(c, store.FinishTemplateBuildParams{
				ID: b.ID, Status: status, Error: &msg, ErrorCode: ptr(errdefs.Code(err)), Now: s.clk.Now(),
				Steps: b.Steps, CachedSteps: b.CachedSteps,
			})
			return err
		}); ferr != nil {
			log.Error("record failed template build", "err", ferr)
		}
		return
	}
	if err := s.publishBuild(fctx, b, res); err != nil {
		log.Error("record finished template build", "err", err)
		// The version is on its host but not in the store: remove it.
		if derr := s.deleteTemplateOnHost(fctx, b.HostID, b.AgentName, &b.TeamID); derr != nil {
			log.Warn("remove unrecorded template version", "err", derr)
		}
		return
	}
	log.Info("template build ready", "duration", time.Duration(res.GetDurationSeconds()*float64(time.Second)),
		"cached_steps", res.GetCachedSteps(), "steps", res.GetSteps())
	s.retireVersions(fctx, b.TeamID, b.TemplateName)
}

func ptr[T any](v T) *T { return &v }

// buildOnHost uploads the context and runs the build, feeding its log.
func (s *Service) buildOnHost(ctx context.Context, b store.TemplateBuild, spec BuildSpec, base TemplateRef, logs *buildLog) (*hostagentv1.BuildResult, error) {
	ag, err := s.agentFor(ctx, b.HostID)
	if err != nil {
		return nil, err
	}
	if err := uploadContext(ctx, ag.UploadBuildContext(ctx), b.AgentName, spec.ContextPath); err != nil {
		return nil, err
	}
	req := &hostagentv1.BuildTemplateRequest{
		BuildId: b.AgentName, TeamId: b.TeamID.String(), Name: b.AgentName, Version: b.Version,
		RecipeFile: spec.RecipeFile, BuildArgs: spec.Args, Credentials: spec.Credentials,
		Network: spec.Network.proto(),
	}
	if spec.Recipe.From.Image == "" {
		req.BaseTemplate = base.AgentName
	}
	stream, err := ag.BuildTemplate(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, agentErr("build template", err)
	}
	defer stream.Close()
	var res *hostagentv1.BuildResult
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *hostagentv1.BuildTemplateResponse_Log:
			logs.add(ev.Log)
		case *hostagentv1.BuildTemplateResponse_Result:
			res = ev.Result
		}
	}
	if err := stream.Err(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("build on host: %w", errdefs.FromConnect(err))
	}
	if res == nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, "the host ended the build without a result")
	}
	return res, nil
}

// uploadContext streams the context file to the host in chunks.
func uploadContext(ctx context.Context, up *connect.ClientStreamForClient[hostagentv1.UploadBuildContextRequest, hostagentv1.UploadBuildContextResponse], build, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open build context: %w", err)
	}
	defer f.Close()
	buf := make([]byte, uploadChunk)
	first := true
	for {
		n, rerr := f.Read(buf)
		if n > 0 || first {
			first = false
			if err := up.Send(&hostagentv1.UploadBuildContextRequest{BuildId: build, Data: buf[:n]}); err != nil {
				// The real error comes with the response.
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read build context: %w", rerr)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if _, err := up.CloseAndReceive(); err != nil {
		return agentErr("upload build context", err)
	}
	return nil
}

// publishBuild records a finished build as ready and makes it its
// template's current version.
func (s *Service) publishBuild(ctx context.Context, b store.TemplateBuild, res *hostagentv1.BuildResult) error {
	now := s.clk.Now()
	return s.retryStore(ctx, func(c context.Context) error {
		return s.inTx(c, func(q *store.Queries) error {
			n, err := q.FinishTemplateBuild(c, store.FinishTemplateBuildParams{
				ID: b.ID, Status: BuildReady, ImageBytes: res.GetImageBytes(), DiskBytes: res.GetDiskBytes(),
				Digest: ptr(res.GetDigest()), Snapshot: res.GetSnapshot(), Vcpus: res.GetVcpus(), MemoryMb: res.GetMemoryMb(),
				DiskMb: res.GetDiskMb(), Steps: res.GetSteps(), CachedSteps: res.GetCachedSteps(), Now: now,
			})
			if err != nil {
				return fmt.Errorf("finish build: %w", err)
			}
			if n == 0 {
				return errdefs.New(errdefs.ErrFailedPrecondition, "build %s ended meanwhile (cancelled or given up)", b.ID)
			}
			// A snapshot restores only into its own shape; a booted image
			// takes any (0: the create's defaults).
			vcpus, mem := res.GetVcpus(), res.GetMemoryMb()
			if res.GetSnapshot() {
				vcpus, mem = cmp.Or(vcpus, 1), cmp.Or(mem, defaultBuildMemoryMB)
			}
			_, err = q.PublishBuiltTemplate(c, store.PublishBuiltTemplateParams{
				TeamID: &b.TeamID, Name: b.TemplateName, AgentName: b.AgentName, HostID: b.HostID,
				Snapshot: res.GetSnapshot(), DiskBytes: res.GetDiskBytes(), Vcpus: vcpus, MemoryMb: mem,
				BuildID: &b.ID, Now: now, Version: b.Version,
			})
			if err != nil && !store.IsNoRows(err) {
				return fmt.Errorf("publish template %s: %w", b.TemplateName, err)
			}
			return nil
		})
	})
}

// retireVersions removes the files of a template's versions older than
// its newest KeptVersions that no sandbox uses any more (the host refuses
// one in use: it stays, and a later build or delete tries again).
func (s *Service) retireVersions(ctx context.Context, team uuid.UUID, name string) {
	old, err := s.q.RetirableTemplateBuilds(ctx, store.RetirableTemplateBuildsParams{TeamID: team, TemplateName: name, Keep: KeptVersions})
	if err != nil {
		s.log.Warn("list retirable template versions", "err", err)
		return
	}
	for _, b := range old {
		err := s.deleteVersionOnHosts(ctx, b)
		if err != nil {
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				s.log.Warn("retire template version", "template", name, "version", b.Version, "err", err)
			}
			continue
		}
		if err := s.q.RetireTemplateBuild(ctx, store.RetireTemplateBuildParams{ID: b.ID, Now: s.clk.Now()}); err != nil {
			s.log.Warn("record retired template version", "template", name, "version", b.Version, "err", err)
		}
	}
}

// CancelBuild cancels a running build (its replica sees it at its next
// lease renewal and stops the host's build).
func (s *Service) CancelBuild(ctx context.Context, b store.TemplateBuild) error {
	msg := "cancelled"
	n, err := s.q.FinishTemplateBuild(ctx, store.FinishTemplateBuildParams{
		ID: b.ID, Status: BuildCanceled, Error: &msg, ErrorCode: ptr("canceled"), Now: s.clk.Now(),
		Steps: b.Steps, CachedSteps: b.CachedSteps,
	})
	if err != nil {
		return fmt.Errorf("cancel build: %w", err)
	}
	if n == 0 {
		return errdefs.New(errdefs.ErrFailedPrecondition, "build %s has already ended (%s)", b.ID, b.Status)
	}
	return nil
}

// buildLog batches a build's log lines into the store.
type buildLog struct {
	s     *Service
	id    uuid.UUID
	seq   int32
	lines []*hostagentv1.BuildLog
	ats   []time.Time
	last  time.Time
	step  int32
	steps int32
	cache int32
}

func newBuildLog(s *Service, id uuid.UUID) *buildLog {
	return &buildLog{s: s, id: id, last: time.Now()}
}

func (l *buildLog) add(e *hostagentv1.BuildLog) {
	l.lines = append(l.lines, e)
	l.ats = append(l.ats, l.s.clk.Now())
	if e.GetPhase() == "step" && e.GetStep() > 0 {
		l.step, l.steps = e.GetStep(), e.GetSteps()
		if e.GetCached() {
			l.cache++
		}
	}
	if len(l.lines) >= 200 || time.Since(l.last) >= buildLogFlush {
		l.flush()
	}
}

func (l *buildLog) flush() {
	l.last = time.Now()
	if len(l.lines) == 0 {
		return
	}
	p := store.InsertTemplateBuildLogsParams{BuildID: l.id}
	for i, e := range l.lines {
		p.Seqs = append(p.Seqs, l.seq)
		l.seq++
		p.Ats = append(p.Ats, l.ats[i])
		p.StepNums = append(p.StepNums, e.GetStep())
		p.StepTotals = append(p.StepTotals, e.GetSteps())
		p.Phases = append(p.Phases, e.GetPhase())
		p.Cacheds = append(p.Cacheds, e.GetCached())
		// PostgreSQL text holds neither NUL nor invalid UTF-8.
		p.Texts = append(p.Texts, strings.ReplaceAll(strings.ToValidUTF8(e.GetText(), "\uFFFD"), "\x00", "\uFFFD"))
	}
	l.lines, l.ats = l.lines[:0], l.ats[:0]
	ctx, cancel := context.WithTimeout(context.Background(), storeRetry)
	defer cancel()
	if err := l.s.q.InsertTemplateBuildLogs(ctx, p); err != nil {
		l.s.log.Warn("write template build log", "build_id", l.id, "err", err)
	}
	if l.step > 0 {
		if err := l.s.q.SetTemplateBuildProgress(ctx, store.SetTemplateBuildProgressParams{
			ID: l.id, CurrentStep: l.step, Steps: l.steps, CachedSteps: l.cache, Now: l.s.clk.Now(),
		}); err != nil {
			l.s.log.Warn("write template build progress", "build_id", l.id, "err", err)
		}
	}
}

func (l *buildLog) close() { l.flush() }
