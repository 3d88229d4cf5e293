package config

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestTLSSettings(t *testing.T) {
	inEmptyDir(t)
	c, err := Parse(nil, required(), &bytes.Buffer{})
	if err != nil || c.TLSMode != "" || c.TLSCert != "" || len(c.TLSNames) != 0 {
		t.Fatalf("default: plain HTTP; got %+v %v", c, err)
	}
	c, err = Parse([]string{"--tls", "self-signed", "--tls-names", "cp.example.com, 10.0.0.5,[::1]"}, required(), &bytes.Buffer{})
	if err != nil || c.TLSMode != "self-signed" || !slices.Equal(c.TLSNames, []string{"cp.example.com", "10.0.0.5", "::1"}) {
		t.Errorf("self-signed: %+v %v", c, err)
	}
	c, err = Parse(nil, append(required(), "WRENN_TLS_CERT=/etc/wrenn/tls.crt", "WRENN_TLS_KEY=/etc/wrenn/tls.key"), &bytes.Buffer{})
	if err != nil || c.TLSCert != "/etc/wrenn/tls.crt" || c.TLSKey != "/etc/wrenn/tls.key" {
		t.Errorf("files: %+v %v", c, err)
	}
	for _, bad := range []struct {
		env  []string
		want string
	}{
		{[]string{"WRENN_TLS=on"}, "WRENN_TLS="},
		{[]string{"WRENN_TLS_CERT=/a"}, "set both or neither"},
		{[]string{"WRENN_TLS_KEY=/a"}, "set both or neither"},
		{[]string{"WRENN_TLS=self-signed", "WRENN_TLS_CERT=/a", "WRENN_TLS_KEY=/b"}, "choose one"},
		{[]string{"WRENN_TLS_NAMES=bad name"}, "WRENN_TLS_NAMES"},
	} {
		_, err := Parse(nil, append(required(), bad.env...), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want an error containing %q", bad.env, err, bad.want)
		}
	}
}
