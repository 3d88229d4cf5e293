package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
)

// Defaults for a plan that names no size.
const (
	DefaultVCPUs    = 1
	DefaultMemoryMB = 1024
	// DefaultDiskMB is the build VMs' disk when the recipe names none:
	// room for package installs on top of the base.
	DefaultDiskMB = 4096
	// DefaultSandboxDiskMB is the disk of a template's sandboxes when the
	// recipe names none: the control plane's default create, so that a
	// create asking for no size restores a warm template's snapshot (whose
	// disk size it holds).
	DefaultSandboxDiskMB = 2048
	// DefaultReadyTimeout bounds a readiness check that names no timeout.
	DefaultReadyTimeout = 60 * time.Second
	// DefaultUser is the template's envd user when the recipe names none.
	DefaultUser = "user"
	// maxLogBytes caps one build's log; what is beyond is dropped with a
	// note (a RUN that prints without end must not fill the database).
	maxLogBytes = 8 << 20
)

// nameRE is a template's name on a host (the agent's validID).
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// Config wires a Builder to its host.
type Config struct {
	// Dir is the agent's WRENN_DIR.
	Dir    string
	VMs    VMs
	Logger *slog.Logger
	// LayerTTL is how long a cached layer nobody used is kept (7 days
	// when zero).
	LayerTTL time.Duration
}

// Builder builds templates on one host.
type Builder struct {
	cfg Config
	log *slog.Logger
}

// New returns a Builder.
func New(cfg Config) (*Builder, error) {
	if cfg.Dir == "" || cfg.VMs == nil {
		return nil, errors.New("builder config: Dir and VMs are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LayerTTL == 0 {
		cfg.LayerTTL = 7 * 24 * time.Hour
	}
	for _, d := range []string{"builds", filepath.Join("buildcache", "layers")} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("builder: %w", err)
		}
	}
	b := &Builder{cfg: cfg, log: cfg.Logger}
	b.removeInterrupted()
	return b, nil
}

// removeInterrupted removes what builds cut short by an agent restart
// left: their work images and versions published but never finished (no
// control plane ever made them ready).
func (b *Builder) removeInterrupted() {
	works, _ := os.ReadDir(filepath.Join(b.cfg.Dir, "builds"))
	for _, w := range works {
		_ = os.RemoveAll(filepath.Join(b.cfg.Dir, "builds", w.Name()))
	}
	images, _ := os.ReadDir(filepath.Join(b.cfg.Dir, "images"))
	for _, e := range images {
		dir := filepath.Join(b.cfg.Dir, "images", e.Name())
		if cfg, err := readConfig(dir); err == nil && cfg.Pending {
			b.log.Info("removing a template version whose build was cut short", "template", e.Name())
			_ = os.RemoveAll(dir)
		}
	}
}

// Request is one build.
type Request struct {
	// Build is the build's id (a-z, 0-9, '-'), Name the new version's
	// template name on this host, Version its number.
	Build   string
	Name    string
	Version int
	TeamID  string
	Plan    Plan
	Context Context
	Network network.Policy
}

// Event is one line of a build's progress.
type Event struct {
	// Step is the 1-based step the event is about (0: none), of Steps.
	Step  int
	Steps int
	// Phase is "base", "step", "image", "start" or "done".
	Phase  string
	Cached bool
	Text   string
}

// Result is a finished version.
type Result struct {
	// ImageBytes is the image's size, DiskBytes what the version takes on
	// the host's disk (image, snapshot and config).
	ImageBytes int64
	DiskBytes  int64
	// Digest is the image's sha256.
	Digest   string
	Snapshot bool
	Steps    int
	Cached   int
	Config   TemplateConfig
	Duration time.Duration
}

// TemplateConfig is what a version's sandboxes start with: written beside
// its image as template.json (the agent's TemplateConfig reads it).
type TemplateConfig struct {
	TeamID    string            `json:"team_id,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	User      string            `json:"user,omitempty"`
	Workdir   string            `json:"workdir,omitempty"`
	VCPUs     int               `json:"vcpus,omitempty"`
	MemoryMB  int               `json:"memory_mb,omitempty"`
	DiskMB    int               `json:"disk_mb,omitempty"`
	Start     []string          `json:"start,omitempty"`
	Build     string            `json:"build,omitempty"`
	Version   int               `json:"version,omitempty"`
	Digest    string            `json:"digest,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	// Pending is set until the build finished: a version left pending by
	// a crash is removed by the agent's recovery, never used.
	Pending bool `json:"pending,omitempty"`
}

// StepError is a step that failed: its recipe line, what it ran and the
// end of its output.
type StepError struct {
	Where    string
	Text     string
	ExitCode int
	Output   string
	Err      error
}

func (e *StepError) Error() string {
	var b strings.Builder
	b.WriteString(e.Where)
	b.WriteString(": ")
	b.WriteString(e.Text)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	} else {
		fmt.Fprintf(&b, ": exited with code %d", e.ExitCode)
	}
	if e.Output != "" {
		b.WriteString("\n")
		b.WriteString(e.Output)
	}
	return b.String()
}

// Unwrap makes a failed step FailedPrecondition (the recipe, not the
// service, failed) unless its cause says otherwise.
func (e *StepError) Unwrap() error {
	if e.Err != nil {
		return e.Err
	}
	return errdefs.ErrFailedPrecondition
}

// build is one build in progress.
type build struct {
	b   *Builder
	req Request
	dir string
	// mu serialises emit: output readers log while the build goes on.
	mu   sync.Mutex
	emit func(Event)
	logN int
	// base
	baseEnv  map[string]string
	baseKey  string
	basePath string
	baseFmt  disk.Format
	steps    []Step
	diskMB   int
}

// Build runs req and publishes the version as images/<Name>. Events are
// emitted from the calling goroutine or from output readers, never at
// once. On failure nothing of the version is left.
func (b *Builder) Build(ctx context.Context, req Request, emit func(Event)) (Result, error) {
	start := time.Now()
	if !nameRE.MatchString(req.Name) {
		return Result{}, errdefs.New(errdefs.ErrInvalidArgument, "template name %q: use 1-40 of a-z, 0-9 and '-'", req.Name)
	}
	if !nameRE.MatchString(req.Build) {
		return Result{}, errdefs.New(errdefs.ErrInvalidArgument, "build id %q: use 1-40 of a-z, 0-9 and '-'", req.Build)
	}
	if (req.Plan.Base.Template == "") == (req.Plan.Base.Image == nil) {
		return Result{}, errdefs.New(errdefs.ErrInvalidArgument, "build %s: the plan needs exactly one base", req.Build)
	}
	final := filepath.Join(b.cfg.Dir, "images", req.Name)
	if _, err := os.Lstat(final); err == nil {
		return Result{}, errdefs.New(errdefs.ErrAlreadyExists, "template %q already exists on this host", req.Name)
	}
	bd := &build{b: b, req: req, emit: emit, dir: filepath.Join(b.cfg.Dir, "builds", req.Build)}
	if err := os.Mkdir(bd.dir, 0o700); err != nil {
		return Result{}, fmt.Errorf("build %s: %w", req.Build, errdefs.FromOS(err))
	}
	defer os.RemoveAll(bd.dir)
	b.collectLayers()

	if err := bd.resolveBase(); err != nil {
		return Result{}, err
	}
	res := Result{Steps: len(bd.steps)}
	work := filepath.Join(bd.dir, "work.raw")
	cached, err := bd.runSteps(ctx, work)
	if err != nil {
		return Result{}, err
	}
	res.Cached = cached
	cfg, err := bd.publish(ctx, work, final)
	if err != nil {
		return Result{}, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(final)
		}
	}()
	if p := req.Plan.Final.Start; p != nil {
		if err := bd.warmStart(ctx, cfg, p); err != nil {
			return Result{}, err
		}
		res.Snapshot = true
	}
	cfg.Pending = false
	if err := writeConfig(final, cfg); err != nil {
		return Result{}, err
	}
	ok = true
	res.Config = cfg
	res.Digest = cfg.Digest
	if fi, err := os.Stat(filepath.Join(final, "rootfs.ext4")); err == nil {
		res.ImageBytes = fi.Size()
	}
	res.DiskBytes = dirUsage(final)
	res.Duration = time.Since(start)
	bd.event(Event{Phase: "done", Text: fmt.Sprintf("built %s in %s (%d of %d steps cached)", req.Name, res.Duration.Round(100*time.Millisecond), res.Cached, res.Steps)})
	return res, nil
}

func (bd *build) event(e Event) {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	bd.emitLocked(e)
}

func (bd *build) emitLocked(e Event) {
	if bd.emit == nil {
		return
	}
	e.Steps = len(bd.steps)
	bd.emit(e)
}

// logf emits a line of output, up to the build's log cap.
func (bd *build) logf(step int, phase, format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	bd.mu.Lock()
	defer bd.mu.Unlock()
	if bd.logN >= maxLogBytes {
		return
	}
	bd.logN += len(text)
	if bd.logN >= maxLogBytes {
		text = "(the build's log is over " + strconv.Itoa(maxLogBytes>>20) + " MiB: the rest is not kept)"
	}
	bd.emitLocked(Event{Step: step, Phase: phase, Text: text})
}

// resolveBase finds the base image, its identity and environment, and
// the steps to run (with the installs an OCI base needs first).
func (bd *build) resolveBase() error {
	p := bd.req.Plan
	bd.steps = p.Steps
	if p.Base.Template != "" {
		return bd.templateBase(p.Base)
	}
	img := p.Base.Image
	bd.basePath, bd.baseFmt, bd.baseKey, bd.baseEnv = img.Path, disk.Raw, "oci:"+img.Digest, img.Env
	if len(img.Install) > 0 {
		if img.PackageManager != "apt" {
			return errdefs.New(errdefs.ErrInvalidArgument,
				"%s: the image lacks %s, which Wrenn needs, and has no apt-get to install them", p.Base.Where, strings.Join(img.Install, ", "))
		}
		install := Step{
			Where: p.Base.Where,
			Text:  "(Wrenn) apt-get install " + strings.Join(img.Install, " "),
			Run: &Run{Shell: "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends " +
				strings.Join(img.Install, " ") + " && rm -rf /var/lib/apt/lists/*"},
		}
		install.Key = "install\x00" + strings.Join(img.Install, " ")
		bd.steps = append([]Step{install}, bd.steps...)
	}
	return nil
}

// templateBase starts from a template on this host: its image, or the
// disk of its memory snapshot.
func (bd *build) templateBase(base Base) error {
	dir := filepath.Join(bd.b.cfg.Dir, "images", base.Template)
	if cfg, err := readConfig(dir); err == nil {
		if cfg.Pending {
			return errdefs.New(errdefs.ErrFailedPrecondition, "%s: template %s is still being built", base.Where, base.Template)
		}
		if cfg.TeamID != "" && cfg.TeamID != bd.req.TeamID {
			return errdefs.New(errdefs.ErrPermissionDenied, "%s: template %s belongs to another team", base.Where, base.Template)
		}
		bd.baseEnv = cfg.Env
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	candidates := []struct {
		path string
		f    disk.Format
	}{{filepath.Join(dir, "rootfs.ext4"), disk.Raw}, {filepath.Join(dir, "snapshot", "disk.qcow2"), disk.QCOW2}}
	for _, c := range candidates {
		fi, err := os.Stat(c.path)
		if err != nil {
			continue
		}
		bd.basePath, bd.baseFmt = c.path, c.f
		bd.baseKey = fileIdentity("template:"+base.Template, fi)
		return nil
	}
	return errdefs.New(errdefs.ErrNotFound, "%s: template %s is not on this host", base.Where, base.Template)
}

// fileIdentity names a file's content without reading it: a base image
// replaced (make images renames a new one into place) gets a new inode and
// mtime, so the layers cached over the old one are never used with it.
func fileIdentity(prefix string, fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%s:%d:%d:%d", prefix, fi.Size(), fi.ModTime().UnixNano(), ino)
}

// runSteps brings the work image to the end of the steps: the cached
// prefix flattened from the layer cache, the rest run in one build VM that
// saves a layer after each step.
func (bd *build) runSteps(ctx context.Context, work string) (cached int, err error) {
	final := bd.req.Plan.Final
	bd.diskMB = final.DiskMB
	if bd.diskMB == 0 {
		bd.diskMB = DefaultDiskMB
	}
	baseMB, err := disk.VirtualSizeMB(ctx, bd.basePath, bd.baseFmt)
	if err != nil {
		return 0, fmt.Errorf("build %s: base image: %w", bd.req.Build, err)
	}
	if bd.diskMB < baseMB {
		bd.diskMB = baseMB
	}
	parentKey, parent, parentFmt := bd.baseKey, bd.basePath, bd.baseFmt
	keys := make([]string, len(bd.steps))
	i := 0
	for ; i < len(bd.steps); i++ {
		s := bd.steps[i]
		inputs, err := bd.inputs(s)
		if err != nil {
			return 0, err
		}
		keys[i] = layerKey(bd.req.TeamID, parentKey, s, inputs)
		layer := bd.b.layerPath(keys[i])
		if _, err := os.Stat(layer); err != nil || disk.CheckChain(ctx, layer) != nil {
			break
		}
		now := time.Now()
		_ = os.Chtimes(layer, now, now) // used: the collector keeps it
		bd.event(Event{Step: i + 1, Phase: "step", Cached: true, Text: fmt.Sprintf("%s: %s (cached)", s.Where, s.Text)})
		parentKey, parent, parentFmt = keys[i], layer, disk.QCOW2
	}
	cached = i
	bd.event(Event{Phase: "image", Text: "preparing the work image"})
	if err := disk.Flatten(ctx, parent, parentFmt, work, bd.diskMB); err != nil {
		return 0, fmt.Errorf("build %s: %w", bd.req.Build, err)
	}
	if i == len(bd.steps) {
		return cached, nil
	}
	vm, err := bd.b.cfg.VMs.StartBuildVM(ctx, VMSpec{
		ID: vmID(bd.req.Build, 0), TeamID: bd.req.TeamID, Work: work, VCPUs: orDefault(final.VCPUs, DefaultVCPUs),
		MemoryMB: orDefault(final.MemoryMB, DefaultMemoryMB), DiskMB: bd.diskMB, User: "root", Network: bd.req.Network,
	})
	if err != nil {
		return 0, fmt.Errorf("build %s: start build vm: %w", bd.req.Build, err)
	}
	done := false
	defer func() {
		if !done {
			if derr := vm.Discard(context.WithoutCancel(ctx)); derr != nil {
				bd.b.log.Warn("discard build vm", "build", bd.req.Build, "err", derr)
			}
		}
	}()
	for ; i < len(bd.steps); i++ {
		s := bd.steps[i]
		bd.event(Event{Step: i + 1, Phase: "step", Text: fmt.Sprintf("%s: %s", s.Where, s.Text)})
		if err := bd.runStep(ctx, vm, i+1, s); err != nil {
			return 0, err
		}
		if keys[i] == "" {
			inputs, err := bd.inputs(s)
			if err != nil {
				return 0, err
			}
			keys[i] = layerKey(bd.req.TeamID, parentKey, s, inputs)
		}
		if err := vm.SaveLayer(ctx, bd.b.layerPath(keys[i]), parent, parentFmt); err != nil {
			return 0, fmt.Errorf("build %s: %s: %w", bd.req.Build, s.Where, err)
		}
		parentKey = keys[i]
	}
	done = true
	if err := vm.Finish(ctx); err != nil {
		return 0, fmt.Errorf("build %s: %w", bd.req.Build, err)
	}
	return cached, nil
}

// inputs is the content identity of what a step reads from the context.
func (bd *build) inputs(s Step) (string, error) {
	if s.Copy == nil {
		return "", nil
	}
	if bd.req.Context == nil {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "%s: COPY needs a build context", s.Where)
	}
	d, err := bd.req.Context.Digest(s.Copy.Sources)
	if err != nil {
		return "", fmt.Errorf("%s: %w", s.Where, err)
	}
	return d, nil
}

func (b *Builder) layerPath(key string) string {
	return filepath.Join(b.cfg.Dir, "buildcache", "layers", key+".qcow2")
}

// collectLayers removes cached layers nobody used for LayerTTL. A layer
// over a collected one is found broken (CheckChain) and rebuilt.
func (b *Builder) collectLayers() {
	dir := filepath.Join(b.cfg.Dir, "buildcache", "layers")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-b.cfg.LayerTTL)
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			b.log.Info("cached build layer collected", "layer", e.Name(), "last_used", fi.ModTime())
		}
	}
}

// publish makes the work image the version's image: checked, shrunk to
// its filesystem, and moved with a pending template.json to
// images/<name>.
func (bd *build) publish(ctx context.Context, work, final string) (TemplateConfig, error) {
	bd.event(Event{Phase: "image", Text: "writing the template image"})
	if err := finishImage(ctx, work); err != nil {
		return TemplateConfig{}, fmt.Errorf("build %s: %w", bd.req.Build, err)
	}
	digest, err := fileDigest(work)
	if err != nil {
		return TemplateConfig{}, fmt.Errorf("build %s: %w", bd.req.Build, err)
	}
	f := bd.req.Plan.Final
	cfg := TemplateConfig{
		TeamID: bd.req.TeamID, Env: merged(bd.baseEnv, f.Env), User: f.User, Workdir: f.Workdir,
		VCPUs: f.VCPUs, MemoryMB: f.MemoryMB, DiskMB: f.DiskMB,
		Build: bd.req.Build, Version: bd.req.Version, Digest: digest, CreatedAt: time.Now().UTC(), Pending: true,
	}
	if cfg.User == "" {
		cfg.User = DefaultUser
	}
	if fi, err := os.Stat(work); err == nil && cfg.DiskMB == 0 {
		// The image is the smallest disk its sandboxes can have.
		cfg.DiskMB = max(DefaultSandboxDiskMB, int((fi.Size()+(256<<20))>>20))
	}
	if f.Start != nil {
		cfg.Start = argv(f.Start.Shell, f.Start.Exec)
	}
	tmp := filepath.Join(bd.b.cfg.Dir, "images", "."+bd.req.Name+".tmp-"+bd.req.Build)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return TemplateConfig{}, fmt.Errorf("build %s: %w", bd.req.Build, errdefs.FromOS(err))
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	// Readable by VMMs, as base images are: sandboxes' overlays read it.
	if err := os.Chmod(work, 0o644); err != nil {
		return TemplateConfig{}, fmt.Errorf("build %s: %w", bd.req.Build, errdefs.FromOS(err))
	}
	if err := os.Rename(work, filepath.Join(tmp, "rootfs.ext4")); err != nil {
		return TemplateConfig{}, fmt.Errorf("build %s: %w", bd.req.Build, errdefs.FromOS(err))
	}
	if err := writeConfig(tmp, cfg); err != nil {
		return TemplateConfig{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return TemplateConfig{}, fmt.Errorf("build %s: %w", bd.req.Build, errdefs.FromOS(err))
	}
	ok = true
	return cfg, nil
}

func writeConfig(dir string, cfg TemplateConfig) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode template config: %w", err)
	}
	tmp := filepath.Join(dir, ".template.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write template config: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "template.json")); err != nil {
		return fmt.Errorf("write template config: %w", err)
	}
	return nil
}

func readConfig(dir string) (TemplateConfig, error) {
	var cfg TemplateConfig
	b, err := os.ReadFile(filepath.Join(dir, "template.json"))
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("decode %s/template.json: %w", dir, err)
	}
	return cfg, nil
}

// fileDigest is a file's sha256 as "sha256:<hex>".
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// dirUsage is the bytes a directory's files take on disk.
func dirUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if u, err := disk.Usage(p); err == nil {
			n += u
		}
		return nil
	})
	return n
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// vmID names the n-th VM of a build (never a sandbox's id: the control
// plane's have no '-').
func vmID(build string, n int) string {
	id := "b-" + build
	if len(id) > 36 {
		id = id[:36]
	}
	return id + "-" + strconv.Itoa(n)
}
