package recipe

import (
	"errors"
	"path"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// FuzzParse checks that no input panics, that every failure is a recipe
// *Error (so the API answers 400) and that what succeeds keeps the
// invariants the builder relies on.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"FROM minimal\nRUN echo hi\n",
		"# escape=`\nFROM minimal\nRUN a `\n b\n",
		"ARG B=minimal\nFROM $B\nENV A=1 B=\"x y\"\nCOPY --chown=u:g a b/ /d/\nCMD [\"x\"]\nENTRYPOINT y\n",
		"FROM minimal\nRUN <<EOF\nx\nEOF\n",
		"FROM minimal\nWORKDIR ${A:-/x}\nUSER ${U:+y}\nEXPOSE 1/tcp\nLABEL a=b\n",
		"FROM minimal\nCOPY [\"a\", \"/b\"]\nADD x /y\n",
	} {
		f.Add("Dockerfile", seed)
	}
	f.Add("wrenn.yaml", fullYAML)
	f.Add("wrenn.json", `{"from": "minimal", "steps": [{"run": ["a"]}], "start": "x", "ready": {"command": "true"}}`)
	f.Fuzz(func(t *testing.T, name, data string) {
		if formOf(name) == formUnknown {
			name = "Dockerfile"
		}
		r, err := Parse(name, []byte(data), files{"Dockerfile": "FROM minimal\nRUN x\n"}, map[string]string{"A": "1"})
		if err != nil {
			var re *Error
			if !errors.As(err, &re) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v (%T) is not a recipe error", err, err)
			}
			return
		}
		if (r.From.Template == "") == (r.From.Image == "") {
			t.Fatalf("from %+v: exactly one of template and image", r.From)
		}
		if r.Ready != nil && r.Start == nil {
			t.Fatalf("ready without start")
		}
		for _, s := range r.Steps {
			if !path.IsAbs(s.Workdir) {
				t.Fatalf("workdir %q not absolute", s.Workdir)
			}
			switch s.Kind {
			case KindRun:
				if (s.Shell == "") == (s.Exec == nil) {
					t.Fatalf("run %+v: exactly one of shell and exec", s)
				}
			case KindCopy, KindAdd:
				if !path.IsAbs(s.Dest) || len(s.Sources) == 0 {
					t.Fatalf("copy %+v", s)
				}
			}
			_ = s.CacheText()
		}
	})
}
