package cli

import (
	"encoding/json"
	"encoding/pem"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tlsFront serves the harness's fake API over HTTPS (HTTP/2 enabled, as
// wrenn-cp serves it) with httptest's own certificate, and returns the URL
// and a file holding the certificate as a CA.
func tlsFront(t *testing.T, h *harness) (string, string) {
	t.Helper()
	target, err := url.Parse(h.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

func TestCACert(t *testing.T) {
	h := newHarness(t)
	base, caFile := tlsFront(t, h)
	h.env["WRENN_API_URL"] = base

	if r := h.run("template", "ls"); r.code != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("HTTPS with an untrusted certificate and no --ca-cert: %+v", r)
	}
	if out := h.mustRun("template", "ls", "--ca-cert", caFile); !strings.Contains(out, "minimal") {
		t.Errorf("template ls with --ca-cert: %q", out)
	}
	h.env["WRENN_CA_CERT"] = caFile
	h.mustRun("template", "ls")

	// WebSockets (exec) need HTTP/1.1 upgrades on a client that speaks
	// HTTP/2 otherwise.
	id := strings.TrimSpace(h.mustRun("sbx", "create"))
	if r := h.run("sbx", "exec", id, "--", "echo", "over", "tls"); r.code != 0 || r.stdout != "over tls\n" {
		t.Errorf("exec over HTTPS: %+v", r)
	}

	if r := h.run("template", "ls", "--ca-cert", filepath.Join(t.TempDir(), "missing.crt")); r.code != 1 || !strings.Contains(r.stderr, "--ca-cert") {
		t.Errorf("missing CA file: %+v", r)
	}

	// login keeps it (as an absolute path) for later runs.
	delete(h.env, "WRENN_CA_CERT")
	t.Chdir(filepath.Dir(caFile))
	h.mustRun("login", "--api-key", h.srv.APIKey, "--ca-cert", filepath.Base(caFile))
	var saved fileConfig
	b, _ := os.ReadFile(filepath.Join(h.env["HOME"], ".config", "wrenn", "config.json"))
	if json.Unmarshal(b, &saved) != nil || saved.CACert != caFile {
		t.Fatalf("saved config = %s, want ca_cert %s", b, caFile)
	}
	delete(h.env, "WRENN_API_KEY")
	t.Chdir(t.TempDir())
	h.mustRun("template", "ls")
}
