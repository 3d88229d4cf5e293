// Package hostbuild is the host agent's side of a template build: it
// keeps the uploaded build context, parses the recipe, turns FROM into a
// base (pulling an OCI image and making it bootable, cached by digest),
// makes the builder's plan and runs it.
//
// Layout under the agent's directory (WRENN_DIR):
//
//	buildctx/<build>.tar        an uploaded context, until its build runs (an hour at most)
//	buildctx/<build>.d/         the context unpacked while its build runs
//	buildcache/blobs/           OCI layer blobs by digest (ociimage's cache)
//	buildcache/bases/<key>.ext4 OCI images made bootable, with <key>.json beside
//	buildcache/bin/<key>/       envd, wrenn-init and tini taken from the minimal image
package hostbuild

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
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/templates/buildctx"
	"github.com/wrenn/wrenn/internal/templates/builder"
	"github.com/wrenn/wrenn/internal/templates/ociimage"
	"github.com/wrenn/wrenn/internal/templates/recipe"
)

// DefaultMaxContextBytes bounds an uploaded context (the tar as sent).
const DefaultMaxContextBytes = 1 << 30

// contextTTL is how long an uploaded context waits for its build.
const contextTTL = time.Hour

// DefaultCacheTTL is how long an OCI base image or layer blob nobody used
// is kept.
const DefaultCacheTTL = 7 * 24 * time.Hour

// RecipeFiles are the recipe names tried, in order, when a build names
// none.
var RecipeFiles = []string{"Dockerfile", "wrenn.yaml", "wrenn.yml", "wrenn.json"}

// Config wires a Service.
type Config struct {
	// Dir is the agent's WRENN_DIR.
	Dir     string
	Builder *builder.Builder
	Logger  *slog.Logger
	// BaseImage is the image whose envd, wrenn-init and tini go into OCI
	// bases: images/minimal/rootfs.ext4 when empty.
	BaseImage string
	// Insecure says which registries may be reached over plain HTTP;
	// nil: loopback ones only.
	Insecure func(registry string) bool
	// MaxContextBytes bounds an upload (DefaultMaxContextBytes when 0).
	MaxContextBytes int64
	// CacheTTL is how long unused OCI bases and blobs stay
	// (DefaultCacheTTL when 0).
	CacheTTL time.Duration
}

// Service runs builds on one host.
type Service struct {
	cfg Config
	log *slog.Logger

	// mu guards active, the builds running: the caches are collected only
	// when none is, so no build loses a file it is about to read.
	mu     sync.Mutex
	active int
}

// New returns a Service and removes what interrupted builds left.
func New(cfg Config) (*Service, error) {
	if cfg.Dir == "" || cfg.Builder == nil {
		return nil, errors.New("hostbuild config: Dir and Builder are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BaseImage == "" {
		cfg.BaseImage = filepath.Join(cfg.Dir, "images", "minimal", "rootfs.ext4")
	}
	if cfg.MaxContextBytes == 0 {
		cfg.MaxContextBytes = DefaultMaxContextBytes
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	for _, d := range []string{"buildctx", "buildcache/blobs", "buildcache/bases", "buildcache/bin"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("hostbuild: %w", err)
		}
	}
	// No build survives an agent restart: its control plane stream ended.
	entries, _ := os.ReadDir(filepath.Join(cfg.Dir, "buildctx"))
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(cfg.Dir, "buildctx", e.Name()))
	}
	return &Service{cfg: cfg, log: cfg.Logger}, nil
}

func (s *Service) contextPath(build string) string {
	return filepath.Join(s.cfg.Dir, "buildctx", build+".tar")
}

// SaveContext stores an upload for build, at most MaxContextBytes.
func (s *Service) SaveContext(ctx context.Context, build string, r io.Reader) (int64, error) {
	s.removeStale()
	dst := s.contextPath(build)
	tmp := dst + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("save build context: %w", errdefs.FromOS(err))
	}
	defer os.Remove(tmp)
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, s.cfg.MaxContextBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("save build context: %w", err)
	}
	if n > s.cfg.MaxContextBytes {
		return 0, errdefs.New(errdefs.ErrTooLarge, "build context is over %d MiB", s.cfg.MaxContextBytes>>20)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return 0, fmt.Errorf("save build context: %w", errdefs.FromOS(err))
	}
	return n, nil
}

// removeStale drops uploads whose build never came.
func (s *Service) removeStale() {
	dir := filepath.Join(s.cfg.Dir, "buildctx")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > contextTTL && strings.HasSuffix(e.Name(), ".tar") {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// collectCaches removes OCI bases and layer blobs unused for CacheTTL (a
// use renews a file's modification time). s.mu is held and no build runs.
func (s *Service) collectCaches() {
	cutoff := time.Now().Add(-s.cfg.CacheTTL)
	for _, dir := range []string{filepath.Join(s.cfg.Dir, "buildcache", "bases"), filepath.Join(s.cfg.Dir, "buildcache", "blobs")} {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.ModTime().Before(cutoff) {
				if os.Remove(p) == nil {
					s.log.Info("unused build cache file removed", "file", p, "last_used", fi.ModTime())
				}
			}
			return nil
		})
	}
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Request is one build on this host.
type Request struct {
	Build   string
	TeamID  string
	Name    string
	Version int
	// RecipeFile is the recipe's path in the context; "" tries
	// RecipeFiles.
	RecipeFile string
	Args       map[string]string
	// BaseTemplate is FROM's template as this host names it (the control
	// plane resolved the team's name); "" when FROM is an image.
	BaseTemplate string
	Network      network.Policy
	Auth         map[string]ociimage.Credential
}

// Build runs one build from its uploaded context.
func (s *Service) Build(ctx context.Context, req Request, emit func(builder.Event)) (builder.Result, error) {
	s.mu.Lock()
	if s.active == 0 {
		s.collectCaches()
	}
	s.active++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()
	tarPath := s.contextPath(req.Build)
	f, err := os.Open(tarPath)
	if err != nil {
		return builder.Result{}, errdefs.New(errdefs.ErrFailedPrecondition, "build %s: no uploaded context (upload it first)", req.Build)
	}
	defer os.Remove(tarPath)
	defer f.Close()
	dir := filepath.Join(s.cfg.Dir, "buildctx", req.Build+".d")
	defer os.RemoveAll(dir)
	bctx, err := buildctx.Unpack(ctx, f, dir, buildctx.Limits{})
	if err != nil {
		return builder.Result{}, fmt.Errorf("build context: %w", err)
	}
	defer bctx.Close()
	file, data, err := ReadRecipe(bctx, req.RecipeFile)
	if err != nil {
		return builder.Result{}, err
	}
	rec, err := recipe.ParseWith(file, data, bctx, recipe.Options{Args: req.Args})
	if err != nil {
		return builder.Result{}, err
	}
	where := fmt.Sprintf("%s:%d", file, rec.From.Line)
	base := builder.Base{Where: where}
	var baseEnv []string
	switch {
	case rec.From.Image != "":
		emit(builder.Event{Phase: "base", Text: "pulling " + rec.From.Image})
		img, err := s.imageBase(ctx, rec.From.Image, req.Auth, func(line string) { emit(builder.Event{Phase: "base", Text: line}) })
		if err != nil {
			return builder.Result{}, fmt.Errorf("%s: FROM %s: %w", where, rec.From.Image, err)
		}
		base.Image = img
		for _, k := range slices.Sorted(maps.Keys(img.Env)) {
			baseEnv = append(baseEnv, k+"="+img.Env[k])
		}
	case req.BaseTemplate != "":
		base.Template = req.BaseTemplate
		baseEnv = templateEnv(filepath.Join(s.cfg.Dir, "images", req.BaseTemplate))
	default:
		return builder.Result{}, errdefs.New(errdefs.ErrInvalidArgument, "%s: FROM %s: the control plane sent no template for it", where, rec.From.Template)
	}
	if len(baseEnv) > 0 {
		// Again with the base's environment: `ENV PATH=/x:$PATH` needs it.
		if rec, err = recipe.ParseWith(file, data, bctx, recipe.Options{Args: req.Args, BaseEnv: baseEnv}); err != nil {
			return builder.Result{}, err
		}
	}
	plan := PlanFromRecipe(rec, base)
	return s.cfg.Builder.Build(ctx, builder.Request{
		Build: req.Build, Name: req.Name, Version: req.Version, TeamID: req.TeamID,
		Plan: plan, Context: bctx, Network: req.Network,
	}, emit)
}

// ReadRecipe reads the recipe named file from the context, or the first of
// RecipeFiles when file is "".
func ReadRecipe(c recipe.FileReader, file string) (string, []byte, error) {
	if file != "" {
		data, err := c.ReadFile(file)
		if err != nil {
			return "", nil, errdefs.New(errdefs.ErrInvalidArgument, "recipe %s: not in the build context (%v)", file, err)
		}
		return file, data, nil
	}
	for _, f := range RecipeFiles {
		if data, err := c.ReadFile(f); err == nil {
			return f, data, nil
		}
	}
	return "", nil, errdefs.New(errdefs.ErrInvalidArgument, "no recipe in the build context: add one of %s, or name it", strings.Join(RecipeFiles, ", "))
}

// templateEnv is a built template's environment as KEY=VALUE.
func templateEnv(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, "template.json"))
	if err != nil {
		return nil
	}
	var cfg struct {
		Env map[string]string `json:"env"`
	}
	if json.Unmarshal(b, &cfg) != nil {
		return nil
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(cfg.Env)) {
		out = append(out, k+"="+cfg.Env[k])
	}
	return out
}

// PlanFromRecipe is the builder's plan for a parsed recipe over base.
func PlanFromRecipe(rec *recipe.Recipe, base builder.Base) builder.Plan {
	p := builder.Plan{Base: base}
	img := base.Image
	hadWorkdir := false
	for _, st := range rec.Steps {
		s := builder.Step{Where: fmt.Sprintf("%s:%d", st.File, st.Line), Text: st.Text, Key: st.CacheText()}
		workdir, user := st.Workdir, st.RunAs
		if img != nil {
			// The image's own WORKDIR and USER hold until the recipe
			// sets its own, as in Docker.
			if workdir == "" || (workdir == "/" && !hadWorkdir) {
				workdir = img.Workdir
			}
			if user == "" {
				user = img.User
			}
		}
		switch st.Kind {
		case recipe.KindRun:
			s.Run = &builder.Run{Shell: st.Shell, Exec: st.Exec, Env: kvMap(st.Env), Workdir: workdir, User: user}
		case recipe.KindCopy, recipe.KindAdd:
			s.Copy = &builder.Copy{Sources: st.Sources, Dest: st.Dest, Chown: st.Chown, Chmod: st.Chmod, Workdir: workdir}
		case recipe.KindWorkdir:
			hadWorkdir = true
			s.Run = &builder.Run{Workdir: st.Value, Mkdir: true}
		default:
			continue // ENV, ARG, USER: folded into the later steps
		}
		p.Steps = append(p.Steps, s)
	}
	f := builder.Final{
		Env: kvMap(rec.Env), User: rec.User,
		VCPUs: rec.Resources.VCPUs, MemoryMB: rec.Resources.MemoryMB, DiskMB: rec.Resources.DiskMB,
	}
	switch {
	case hadWorkdir:
		f.Workdir = rec.Workdir
	case img != nil:
		f.Workdir = img.Workdir
	}
	if rec.Start != nil {
		st := &builder.Start{Shell: rec.Start.Shell, Exec: rec.Start.Exec, User: rec.RunAs, Workdir: f.Workdir}
		if st.User == "" && img != nil {
			st.User = img.User
		}
		if rec.Ready != nil {
			st.Ready = builder.Ready{Port: rec.Ready.Port, HTTP: rec.Ready.HTTP, Command: rec.Ready.Command, Timeout: rec.Ready.Timeout}
		}
		f.Start = st
	}
	p.Final = f
	return p
}

func kvMap(kvs []recipe.KV) map[string]string {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// imageBase pulls ref and makes it a bootable base image, or finds the
// one made before from the same image and the same Wrenn files.
func (s *Service) imageBase(ctx context.Context, ref string, auth map[string]ociimage.Credential, logf func(string)) (*builder.ImageBase, error) {
	bins, err := s.wrennFiles(ctx)
	if err != nil {
		return nil, err
	}
	pulled, err := ociimage.Pull(ctx, ref, ociimage.PullOptions{
		Auth: auth, Insecure: s.cfg.Insecure, CacheDir: filepath.Join(s.cfg.Dir, "buildcache", "blobs"), Log: logf,
	})
	if err != nil {
		return nil, err
	}
	defer pulled.Close()
	now := time.Now()
	for _, l := range pulled.Layers {
		_ = os.Chtimes(l.Path, now, now) // used: collectCaches keeps it
	}
	key := sha256.Sum256([]byte("wrenn-base-v1\x00" + pulled.Digest + "\x00" + bins.key))
	name := hex.EncodeToString(key[:])
	bases := filepath.Join(s.cfg.Dir, "buildcache", "bases")
	out, meta := filepath.Join(bases, name+".ext4"), filepath.Join(bases, name+".json")
	if b, err := os.ReadFile(meta); err == nil {
		var img builder.ImageBase
		if json.Unmarshal(b, &img) == nil {
			if _, err := os.Stat(out); err == nil {
				_ = os.Chtimes(out, now, now)
				_ = os.Chtimes(meta, now, now)
				logf("image " + pulled.Digest + " is already a base image here")
				return &img, nil
			}
		}
	}
	logf("unpacking " + pulled.Digest)
	tree, err := os.MkdirTemp(bases, ".tree-")
	if err != nil {
		return nil, fmt.Errorf("unpack image: %w", err)
	}
	defer os.RemoveAll(tree)
	if err := pulled.Unpack(ctx, tree); err != nil {
		return nil, err
	}
	rep, err := ociimage.Wrennify(tree, ociimage.WrennifyOptions{EnvdBin: bins.envd, InitBin: bins.init, TiniBin: bins.tini})
	if err != nil {
		return nil, err
	}
	for _, n := range rep.Notes {
		logf(n)
	}
	install := rep.Missing
	if rep.PackageManager != "apt" {
		if len(rep.Required) > 0 {
			return nil, errdefs.New(errdefs.ErrInvalidArgument,
				"the image lacks %s, which Wrenn needs, and has no apt-get to install them", strings.Join(rep.Required, ", "))
		}
		if len(rep.Missing) > 0 {
			logf("the image lacks " + strings.Join(rep.Missing, ", ") + " (not needed by Wrenn; no apt-get to add them)")
		}
		install = nil
	}
	logf("writing the base image")
	if _, err := ociimage.MakeExt4(ctx, tree, out, 256); err != nil {
		return nil, err
	}
	c := pulled.Config
	img := builder.ImageBase{
		Path: out, Digest: pulled.Digest, Env: envMap(c.Env), User: c.User, Workdir: c.WorkingDir,
		Install: install, PackageManager: rep.PackageManager,
	}
	b, err := json.Marshal(img)
	if err != nil {
		return nil, fmt.Errorf("encode base image record: %w", err)
	}
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		return nil, fmt.Errorf("write base image record: %w", err)
	}
	return &img, nil
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if k != "" {
			m[k] = v
		}
	}
	return m
}

// wrennBins are the guest files an OCI base gets.
type wrennBins struct {
	envd, init, tini string
	// key names their content (the base image's identity).
	key string
}

// wrennFiles takes envd, wrenn-init and tini-static out of the minimal
// image (debugfs, no mount), once per version of that image: the guest
// side of every OCI base then matches the base images exactly.
func (s *Service) wrennFiles(ctx context.Context) (wrennBins, error) {
	fi, err := os.Stat(s.cfg.BaseImage)
	if err != nil {
		return wrennBins{}, errdefs.New(errdefs.ErrFailedPrecondition, "OCI images need the minimal image for Wrenn's guest files: %v (run make images)", err)
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	id := sha256.Sum256(fmt.Appendf(nil, "%s:%d:%d:%d", s.cfg.BaseImage, fi.Size(), fi.ModTime().UnixNano(), ino))
	key := hex.EncodeToString(id[:16])
	dir := filepath.Join(s.cfg.Dir, "buildcache", "bin", key)
	b := wrennBins{envd: filepath.Join(dir, "envd"), init: filepath.Join(dir, "wrenn-init"), tini: filepath.Join(dir, "tini-static"), key: key}
	if _, err := os.Stat(filepath.Join(dir, ".done")); err == nil {
		return b, nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".bin-")
	if err != nil {
		return wrennBins{}, fmt.Errorf("take guest files: %w", err)
	}
	defer os.RemoveAll(tmp)
	for src, name := range map[string]string{"/usr/local/bin/envd": "envd", "/usr/local/sbin/wrenn-init": "wrenn-init", "/usr/bin/tini-static": "tini-static"} {
		out := filepath.Join(tmp, name)
		cmd := exec.CommandContext(ctx, "debugfs", "-R", "dump "+src+" "+out, s.cfg.BaseImage)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return wrennBins{}, fmt.Errorf("take %s from %s: %w: %s", src, s.cfg.BaseImage, err, strings.TrimSpace(string(msg)))
		}
		st, err := os.Stat(out)
		if err != nil || st.Size() == 0 {
			if name == "tini-static" {
				_ = os.Remove(out) // optional: images with their own tini
				continue
			}
			return wrennBins{}, fmt.Errorf("take %s from %s: not in the image", src, s.cfg.BaseImage)
		}
		if err := os.Chmod(out, 0o755); err != nil {
			return wrennBins{}, fmt.Errorf("take %s: %w", src, err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".done"), nil, 0o600); err != nil {
		return wrennBins{}, fmt.Errorf("take guest files: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return wrennBins{}, fmt.Errorf("take guest files: %w", err)
	}
	if _, err := os.Stat(b.tini); err != nil {
		b.tini = ""
	}
	return b, nil
}
