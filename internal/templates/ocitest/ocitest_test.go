package ocitest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/templates/ocitest"
)

func TestAuthRegistryRefusesAnonymous(t *testing.T) {
	reg := ocitest.StartAuthRegistry(t, "u", "p")
	resp, err := http.Get("http://" + reg.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("anonymous /v2/: %d %q, want 401 with a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Host+"/v2/", nil)
	req.SetBasicAuth("u", "p")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with credentials /v2/: %d, want 200", resp.StatusCode)
	}
}

func TestPushCountsBlobGets(t *testing.T) {
	reg := ocitest.StartRegistryServer(t)
	ref := reg.Host + "/a/b:1"
	digest := ocitest.PushImage(t, ref, ocitest.FilesLayer(t, map[string]string{"f": "x"}))
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("digest %q", digest)
	}
	if reg.BlobGets() != 0 {
		t.Fatalf("a push counted %d blob GETs", reg.BlobGets())
	}
	resp, err := http.Get("http://" + reg.Host + "/v2/a/b/manifests/1")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || reg.ManifestGets() != 1 {
		t.Fatalf("manifest GET: %d, counted %d", resp.StatusCode, reg.ManifestGets())
	}
}

func TestMinimalTreeMissing(t *testing.T) {
	t.Setenv("WRENN_CACHE", t.TempDir())
	_, err := ocitest.MinimalTree()
	if err == nil || !strings.Contains(err.Error(), "make images") {
		t.Fatalf("err = %v, want one saying to run make images", err)
	}
}
