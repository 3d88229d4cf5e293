package filesig

import (
	"net/url"
	"testing"
	"time"
)

// TestFileSignatureMatchesSDK checks Sign against signatures the
// JS SDK (e2b 2.51.0, getSignature) computed.
func TestFileSignatureMatchesSDK(t *testing.T) {
	for _, c := range []struct{ path, op, user, token, exp, want string }{
		{"/home/user/a b.txt", "read", "user", "tok-123", "", "v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg"},
		{"/tmp/x", "write", "", "tok-123", "1796662668", "v1_b4sCzQZoCDXhQj6c6gzFHrLi+2UKG+WHFL1ze09vOug"},
	} {
		if got := Sign(c.path, c.op, c.user, c.token, c.exp); got != c.want {
			t.Errorf("Sign(%q, %q, %q, token, %q) = %s, want %s", c.path, c.op, c.user, c.exp, got, c.want)
		}
	}
}

func TestValid(t *testing.T) {
	now := time.Unix(1_796_662_000, 0)
	q := url.Values{"path": {"/tmp/x"}, "username": {""}, "signature_expiration": {"1796662668"}}
	q.Set("signature", Sign("/tmp/x", "write", "", "tok-123", "1796662668"))
	if !Valid("POST", q, "tok-123", now) {
		t.Fatal("a valid write signature refused")
	}
	for name, c := range map[string]struct {
		method, token string
		now           time.Time
		edit          func(url.Values)
	}{
		"read with a write signature": {method: "GET", token: "tok-123", now: now},
		"other token":                 {method: "POST", token: "tok-124", now: now},
		"expired":                     {method: "POST", token: "tok-123", now: now.Add(time.Hour)},
		"no token":                    {method: "POST", token: "", now: now},
		"PUT":                         {method: "PUT", token: "tok-123", now: now},
		"other path":                  {method: "POST", token: "tok-123", now: now, edit: func(v url.Values) { v.Set("path", "/etc/passwd") }},
		"later expiration":            {method: "POST", token: "tok-123", now: now, edit: func(v url.Values) { v.Set("signature_expiration", "1896662668") }},
	} {
		v := url.Values{}
		for k, vs := range q {
			v[k] = append([]string(nil), vs...)
		}
		if c.edit != nil {
			c.edit(v)
		}
		if Valid(c.method, v, c.token, c.now) {
			t.Errorf("%s: accepted", name)
		}
	}
}
