package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// TestAccessSettings: signup is closed and byoc hosts may not be internal
// unless the operator says otherwise (issue 11 holes 3 and 6).
func TestAccessSettings(t *testing.T) {
	inEmptyDir(t)
	c, err := Parse(nil, required(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Signup != SignupClosed || c.AllowPrivateHostAddresses {
		t.Errorf("defaults: signup %q, allow private %v", c.Signup, c.AllowPrivateHostAddresses)
	}
	for _, m := range []string{"open", "invite", "closed", "Open"} {
		c, err := Parse(nil, append(required(), "WRENN_SIGNUP="+m, "WRENN_ALLOW_PRIVATE_HOST_ADDRESSES=true"), &bytes.Buffer{})
		if err != nil {
			t.Fatalf("WRENN_SIGNUP=%s: %v", m, err)
		}
		if c.Signup != strings.ToLower(m) || !c.AllowPrivateHostAddresses {
			t.Errorf("WRENN_SIGNUP=%s: %q %v", m, c.Signup, c.AllowPrivateHostAddresses)
		}
	}
	c, err = Parse([]string{"--signup", "invite", "--allow-private-host-addresses", "1"}, required(), &bytes.Buffer{})
	if err != nil || c.Signup != SignupInvite || !c.AllowPrivateHostAddresses {
		t.Errorf("flags: %q %v %v", c.Signup, c.AllowPrivateHostAddresses, err)
	}
	_, err = Parse(nil, append(required(), "WRENN_SIGNUP=yes", "WRENN_ALLOW_PRIVATE_HOST_ADDRESSES=sure"), &bytes.Buffer{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "WRENN_SIGNUP") ||
		!strings.Contains(err.Error(), "WRENN_ALLOW_PRIVATE_HOST_ADDRESSES") {
		t.Errorf("bad values: %v", err)
	}
}
