package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestEdgeSettings(t *testing.T) {
	inEmptyDir(t)
	c, err := Parse(nil, required(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Edge.TrustedProxies) != 0 || c.Edge.ClientIPHeader != "X-Forwarded-For" {
		t.Errorf("defaults: %+v", c.Edge)
	}
	c, err = Parse([]string{"--client-ip-header", "x-real-ip"},
		append(required(), "WRENN_TRUSTED_PROXIES=10.0.0.0/8, 192.0.2.7 ,fd00::/8"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range c.Edge.TrustedProxies {
		got = append(got, p.String())
	}
	if strings.Join(got, ",") != "10.0.0.0/8,192.0.2.7/32,fd00::/8" || c.Edge.ClientIPHeader != "X-Real-Ip" {
		t.Errorf("got %v %q", got, c.Edge.ClientIPHeader)
	}
	_, err = Parse(nil, append(required(), "WRENN_TRUSTED_PROXIES=10.0.0.0/33", "WRENN_CLIENT_IP_HEADER=X Forwarded: For"), &bytes.Buffer{})
	for _, want := range []string{"WRENN_TRUSTED_PROXIES=", "WRENN_CLIENT_IP_HEADER="} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
