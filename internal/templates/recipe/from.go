package recipe

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// templateName is what a Wrenn template name may look like.
var templateName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ParseFrom classifies a FROM value. A reference whose first component has
// a "." or ":" or is "localhost" names a registry and is an OCI image
// (docker.io/library/python:3.12-slim, 127.0.0.1:5000/app:1,
// ghcr.io/x/y@sha256:...); a bare name is a Wrenn template, optionally with
// a numeric version (minimal, my-tpl, my-tpl:3). Anything else (python:3.12,
// library/python) is an error that says how to name the registry: guessing
// Docker Hub would make `FROM python` mean two things.
func ParseFrom(s string) (From, error) {
	if s == "" {
		return From{}, fmt.Errorf("FROM needs an image or template name")
	}
	first, _, hasSlash := strings.Cut(s, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		ref, err := name.ParseReference(s)
		if err != nil {
			return From{}, fmt.Errorf("invalid image reference %q: %v", s, err)
		}
		return From{Image: ref.Name()}, nil
	}
	if hasSlash {
		return From{}, fmt.Errorf("%q does not name its registry: write the registry in full (for Docker Hub: docker.io/%s)", s, s)
	}
	tpl, tag, hasTag := strings.Cut(s, ":")
	if strings.Contains(tpl, "@") {
		return From{}, fmt.Errorf("%q: a template is named by name or name:version, not by digest", s)
	}
	if !templateName.MatchString(tpl) {
		return From{}, fmt.Errorf("%q is not a template name (lowercase letters, digits, - and _, at most 63) nor an image reference with a registry", s)
	}
	f := From{Template: tpl}
	if hasTag && tag != "latest" {
		v, err := strconv.Atoi(tag)
		if err != nil || v < 1 {
			return From{}, fmt.Errorf("%q: a template version is a number (my-tpl:3); for a Docker Hub image write docker.io/library/%s", s, s)
		}
		f.Version = v
	}
	return f, nil
}
