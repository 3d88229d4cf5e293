package capin_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
)

func TestTokens(t *testing.T) {
	pin := "sha256:" + strings.Repeat("ab", 32)
	tok := capin.JoinToken("wrr_0123", pin)
	if tok != "wrr_0123."+strings.Repeat("ab", 32) {
		t.Fatalf("token %q", tok)
	}
	secret, got, err := capin.SplitToken(tok)
	if err != nil || secret != "wrr_0123" || got != pin {
		t.Errorf("split %q = %q %q %v", tok, secret, got, err)
	}
	if secret, got, err := capin.SplitToken("wrr_0123"); err != nil || secret != "wrr_0123" || got != "" {
		t.Errorf("a token without pin: %q %q %v", secret, got, err)
	}
	if _, got, err := capin.SplitToken("wrr_0123." + strings.Repeat("AB", 32)); err != nil || got != pin {
		t.Errorf("upper-case pin: %q %v", got, err)
	}
	for _, bad := range []string{"wrr_0123.", "wrr_0123.abc", ".sha", "wrr_0123." + strings.Repeat("zz", 32), "a.b.c"} {
		if _, _, err := capin.SplitToken(bad); err == nil {
			t.Errorf("SplitToken(%q) accepted", bad)
		}
	}
	if capin.JoinToken("wrr_1", "") != "wrr_1" {
		t.Error("no pin must leave the token alone")
	}
	if _, err := capin.ParseHash(strings.Repeat("0", 64)); err != nil {
		t.Errorf("bare hex: %v", err)
	}
}

// The fingerprint is kubeadm's --discovery-token-ca-cert-hash: SHA-256 of
// the DER SubjectPublicKeyInfo, checked against openssl when it is here.
func TestHashMatchesOpenSSL(t *testing.T) {
	ca, err := hostreg.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := capin.Check(ca.CertPEM(), ca.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	other, _ := hostreg.NewCA(time.Now())
	if err := capin.Check(other.CertPEM(), ca.Fingerprint()); !errors.Is(err, capin.ErrMismatch) {
		t.Errorf("another CA: %v, want ErrMismatch", err)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: skipping the cross-check against openssl")
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", "openssl x509 -in "+path+" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex").Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	f := strings.Fields(string(out))
	if want := "sha256:" + f[len(f)-1]; ca.Fingerprint() != want {
		t.Errorf("fingerprint %s, openssl says %s", ca.Fingerprint(), want)
	}
}
