package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/templates/builder"
	"github.com/wrenn/wrenn/internal/templates/hostbuild"
)

// benchRecipe is what the build figures build: a COPY, a RUN that writes
// files and a Python web server started before the snapshot. Its first
// step's argument changes per cold sample, so a cold build misses the
// cache while the cached ones hit it.
const benchRecipe = `FROM minimal
ARG SALT=0
ENV SALT=$SALT
WORKDIR /srv/bench
COPY index.html ./
RUN echo "$SALT" > salt && python3 -c "import json; json.dump(list(range(1000)), open('data.json', 'w'))"
`

const benchRecipeNative = `dockerfile: Dockerfile
start: python3 -m http.server 8000
ready:
  port: 8000
  timeout: 120s
`

// templates: template build time cold (every step runs) and cached (every
// step from the cache), and create from the warm template (its server
// started before the snapshot) → first HTTP answer of that server,
// against a bare QEMU restore in the same run.
func (b *bench) templates(ctx context.Context) {
	cold := (&Figure{Key: "tpl-build-cold", Name: "template build, no cache (3 steps + start command + snapshot)"})
	cached := (&Figure{Key: "tpl-build-cached", Name: "template build, every step cached (start command + snapshot)"}).
		against("tpl-build-cold", 0)
	warm := (&Figure{Key: "tpl-warm-create", Name: "create from a warm template → first HTTP answer of its started server"}).
		against("bare-restore", 0).also("create")
	defer func() { b.add(GroupWrenn, cold, cached, warm) }()
	m, err := b.manager(ctx)
	if err != nil {
		for _, f := range []*Figure{cold, cached, warm} {
			f.failed(err)
		}
		return
	}
	bld, err := builder.New(builder.Config{Dir: b.w.dir, VMs: m, Logger: b.w.log})
	if err == nil {
		var svc *hostbuild.Service
		if svc, err = hostbuild.New(hostbuild.Config{Dir: b.w.dir, Builder: bld, Logger: b.w.log}); err == nil {
			b.buildFigures(ctx, m, svc, cold, cached, warm)
			return
		}
	}
	for _, f := range []*Figure{cold, cached, warm} {
		f.failed(err)
	}
}

func (b *bench) buildFigures(ctx context.Context, m *agent.Manager, svc *hostbuild.Service, cold, cached, warm *Figure) {
	n := 0
	build := func(ctx context.Context, salt string) (string, builder.Result, error) {
		n++
		id := fmt.Sprintf("bench%d-%d", time.Now().UnixNano()%1e6, n)
		name := "wbt-" + id
		ctxTar, err := benchContext(map[string]string{
			"Dockerfile": benchRecipe, "wrenn.yaml": benchRecipeNative, "index.html": "<h1>wrennbench</h1>\n",
		})
		if err != nil {
			return "", builder.Result{}, err
		}
		if _, err := svc.SaveContext(ctx, id, bytes.NewReader(ctxTar)); err != nil {
			return "", builder.Result{}, err
		}
		res, err := svc.Build(ctx, hostbuild.Request{
			Build: id, Name: name, Version: 1, RecipeFile: "wrenn.yaml", Args: map[string]string{"SALT": salt},
			BaseTemplate: agent.DefaultTemplate, Network: network.Policy{},
		}, nil)
		if err == nil {
			b.w.onClose("template "+name, func(ctx context.Context) error { return m.DeleteTemplate(ctx, name) })
		}
		return name, res, err
	}
	var last string
	b.measure(ctx, cold, b.cfg.BootSamples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		name, res, err := build(ctx, strconv.FormatInt(time.Now().UnixNano(), 10))
		if err == nil && res.Cached != 0 {
			err = fmt.Errorf("cold build hit the cache for %d steps", res.Cached)
		}
		last = name
		return time.Since(t), err
	})
	// Off the clock: the build that fills the cache for the cached ones.
	if _, _, err := build(ctx, "fixed"); err != nil {
		cached.failed(err)
	} else {
		b.measure(ctx, cached, b.cfg.BootSamples, func(ctx context.Context) (time.Duration, error) {
			t := time.Now()
			_, res, err := build(ctx, "fixed")
			if err == nil && res.Cached != res.Steps {
				err = fmt.Errorf("cached build ran %d of %d steps", res.Steps-res.Cached, res.Steps)
			}
			return time.Since(t), err
		})
	}
	if last == "" {
		warm.failed(errors.New("no template was built"))
		return
	}
	cold.note("each sample builds with a new ARG, so every step runs; the start command is a Python http.server")
	b.measure(ctx, warm, b.cfg.Samples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		info, err := m.Create(ctx, agent.CreateRequest{Template: last})
		if err != nil {
			return 0, err
		}
		created := time.Since(t)
		err = httpGet(ctx, net.JoinHostPort(info.Address, "8000"))
		d := time.Since(t)
		b.w.phases.add("Create returned", created)
		b.w.phases.add("first HTTP answer of the started server", d-created)
		b.stopClock()
		return d, errors.Join(err, m.Destroy(context.WithoutCancel(ctx), info.ID))
	})
}

// httpGet is one GET / to addr, which must answer 200.
func httpGet(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/index.html", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET the started server: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET the started server: %s", resp.Status)
	}
	return nil
}

func benchContext(files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
