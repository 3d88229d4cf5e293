// Package builder builds a template version on a host: it runs a
// recipe's steps in build microVMs, caches each step's result by content,
// writes the template's image and, when the recipe has a start command,
// starts it, waits for its readiness check and takes a memory snapshot.
//
// The control plane parses the recipe and resolves what FROM names; the
// builder takes the result as a Plan (plan.go), so it knows nothing of
// Dockerfiles. Its VMs come from the host agent (VMs, vm.go), base images
// of OCI references from Images.
//
// Layout under the agent's directory (WRENN_DIR):
//
//	builds/<build>/            the work image of a build in progress (root's alone)
//	buildcache/layers/<key>.qcow2   cached step results; key = sha256(team, parent key, step)
//	buildcache/bases/               OCI bases (Images keeps them)
//	images/<name>/             the finished version: rootfs.ext4, template.json, snapshot/
package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"time"
)

// Plan is a recipe resolved for one host: where it starts from, its steps
// and what its sandboxes start with.
type Plan struct {
	// Base is exactly one of a template on this host or an OCI image.
	Base Base
	// Steps change the filesystem, in order.
	Steps []Step
	Final Final
}

// Base is what a build starts from.
type Base struct {
	// Template is a template's name on this host (its agent name).
	Template string
	// Image is an OCI image already made a base image (hostbuild pulls it
	// before the plan is made: the recipe's expansion needs its config).
	Image *ImageBase
	// Where is the FROM line ("Dockerfile:1"), for errors.
	Where string
}

// Step is one filesystem-changing step: a command or a copy from the
// build context.
type Step struct {
	// Where is the recipe line ("Dockerfile:7"), Text the instruction as
	// written: both for logs and errors.
	Where string
	Text  string
	// Key is everything that decides the step's result, as stable text
	// (recipe.Step.CacheText): with the parent's key and, for a copy, the
	// content of its sources, it names the cached result.
	Key string
	Run *Run
	// Copy is a COPY or ADD.
	Copy *Copy
}

// Run is a command run in the build VM.
type Run struct {
	// Shell runs under /bin/sh -c; else Exec is argv.
	Shell string
	Exec  []string
	// Env is the environment in force (the recipe's ENV and ARG); the
	// base image's environment is laid under it.
	Env map[string]string
	// Workdir is created first (as root) when missing; "" is /.
	Workdir string
	// User runs the command; "" is root, as in a Dockerfile.
	User string
	// Mkdir makes the step a WORKDIR: the directory is created, nothing
	// runs.
	Mkdir bool
}

// Copy places files of the build context in the image.
type Copy struct {
	Sources []string
	Dest    string
	// Chown is "user[:group]" (names resolved in the image) or "".
	Chown string
	Chmod string
	// Workdir resolves a relative Dest.
	Workdir string
}

// Final is what the template's sandboxes start with.
type Final struct {
	Env     map[string]string
	User    string
	Workdir string
	Start   *Start
	VCPUs   int
	// MemoryMB and DiskMB size the build VMs and are the template's
	// defaults.
	MemoryMB int
	DiskMB   int
}

// Start is the command started before the memory snapshot.
type Start struct {
	Shell string
	Exec  []string
	// User runs it ("" is the template's envd user), in Workdir.
	User    string
	Workdir string
	Ready   Ready
}

// Ready is how the build knows the started command is ready: one of a
// TCP port accepting, an HTTP URL answering 200, or a command exiting 0;
// none means "the process started".
type Ready struct {
	Port    int
	HTTP    string
	Command string
	Timeout time.Duration
}

// argv is the command line of a Run or Start.
func argv(shell string, exec []string) []string {
	if len(exec) > 0 {
		return exec
	}
	return []string{"/bin/sh", "-c", shell}
}

// layerKey names the result of step applied on parent for team. A team's
// cache is its own: a key includes the team, so no build can learn from
// a cache hit what another team built.
func layerKey(team, parent string, s Step, inputs string) string {
	h := sha256.New()
	for _, part := range []string{"wrenn-layer-v1", team, parent, s.Key, inputs} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// merged lays over on top of under.
func merged(under, over map[string]string) map[string]string {
	out := maps.Clone(under)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, over)
	return out
}
