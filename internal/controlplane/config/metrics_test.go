package config

import (
	"bytes"
	"errors"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// /metrics is unauthenticated: by default it listens on loopback only, an
// empty WRENN_METRICS_ADDR turns it off, and a bad one is named at start.
func TestMetricsAddr(t *testing.T) {
	inEmptyDir(t)
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{nil, "127.0.0.1:9464"},
		{[]string{"WRENN_METRICS_ADDR="}, ""},
		{[]string{"WRENN_METRICS_ADDR=0.0.0.0:9100"}, "0.0.0.0:9100"},
	} {
		c, err := Parse(nil, append(required(), tt.env...), &bytes.Buffer{})
		if err != nil || c.MetricsAddr != tt.want {
			t.Errorf("%v: MetricsAddr = %q, %v; want %q", tt.env, c.MetricsAddr, err, tt.want)
		}
	}
	_, err := Parse(nil, append(required(), "WRENN_METRICS_ADDR=nope"), &bytes.Buffer{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad address: err = %v; want invalid argument", err)
	}
}
