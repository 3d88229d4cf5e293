// Package leakcheck lists everything a Wrenn agent holds on this machine,
// found from the outside: by reading /proc, the cgroup filesystems,
// /dev/shm, /run/netns and WRENN_DIR, and by asking `ip` and `nft`, never
// by asking the agent. A test that destroyed every sandbox (or a fault
// test that killed and restarted a daemon) calls List and fails unless
// what is left is only what a live agent legitimately keeps.
//
// The names are the agent's (internal/agent/config.go, DaemonConfig.Name;
// cmd/wrenn-agent wires them): with Scope.AgentName = N and Scope.Dir = D,
//
// Covered, per sandbox (a leak once the sandbox is gone):
//   - vmm-process: a process whose argv[0] names qemu or firecracker and
//     whose command line mentions D (the VMM's sockets and pid file live
//     under D/sandboxes/<id>/vm), or any process whose real uid is in the
//     VMM range Scope.VMMUIDBase+1 .. +Scope.VMMUIDCount (the agent runs
//     each VMM as base+slot), whatever its name;
//   - process: any other process whose command line mentions
//     D/sandboxes/ or D/snapshots/ (a helper the agent started for a
//     sandbox);
//   - netns: /run/netns/N-<i> (a slot) and N-<i>g (an emulated guest,
//     network tests only);
//   - link: a host-namespace interface N-<i> (the host end of a slot's
//     veth pair);
//   - cgroup: <cgroup root>/N/<id> on v2, or <root>/<controller>/N/<id>
//     for each of the cpu, cpuacct, memory and pids hierarchies on v1 (a
//     co-mounted hierarchy is listed once);
//   - memory-file: any file in /dev/shm/N (guest RAM is <id>.mem);
//   - sandbox-dir: any entry of D/sandboxes (each live sandbox, whatever
//     its state, has one);
//   - snapshot-dir: D/snapshots/<id> (a hibernated sandbox) and
//     D/snapshots/fork-<id>-<rand> (a fork in flight);
//   - trash-dir: D/snapshots/.trash-* (a used snapshot being deleted);
//   - template-tmp: D/images/.<name>.tmp-* (a template being written).
//
// Covered, per agent (present while the agent runs, with or without
// sandboxes; a stopped agent leaves them too, see Resource.PerAgent):
//   - nft-table: the host table "inet N";
//   - cgroup-parent: the group N itself (per hierarchy on v1);
//   - memory-dir: /dev/shm/N (a tmpfs the agent mounts).
//
// Listed but not leaks: template: D/images/<name> holding a snapshot/
// directory, a snapshot template owned by a template row. Base images
// (D/images/<name> without snapshot/), kernels, PostgreSQL's D/pg and the
// agent's credentials are not listed at all.
//
// Not covered: nftables tables and conntrack entries inside a slot
// namespace (they die with the namespace, which is covered); TAP devices
// (they live inside the slot namespace); routes and addresses in the host
// namespace that outlived their link (the kernel removes them with it);
// files a VMM uid owns outside the places above; loop devices and mounts
// (the agent makes none per sandbox; the memory dir's tmpfs is the
// per-agent memory-dir); anything on another machine or in the control
// plane's database; a Firecracker jailer's chroot (the Firecracker driver
// is not run on real VMs). Links and nft tables are looked for in the
// namespace List runs in, which must be the agent's.
package leakcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Kinds of Resource.
const (
	KindVMMProcess   = "vmm-process"
	KindProcess      = "process"
	KindNetNS        = "netns"
	KindLink         = "link"
	KindNFTTable     = "nft-table"
	KindCgroupParent = "cgroup-parent"
	KindCgroup       = "cgroup"
	KindMemoryDir    = "memory-dir"
	KindMemoryFile   = "memory-file"
	KindSandboxDir   = "sandbox-dir"
	KindSnapshotDir  = "snapshot-dir"
	KindTrashDir     = "trash-dir"
	KindTemplateTmp  = "template-tmp"
	KindTemplate     = "template"
)

// DefaultVMMUIDCount is how many uids above Scope.VMMUIDBase are VMM
// identities: one per network slot (network.DefaultSlots, which the agent
// uses).
const DefaultVMMUIDCount = 1024

// Scope names one agent.
type Scope struct {
	// Dir is the agent's WRENN_DIR.
	Dir string
	// AgentName is its WRENN_AGENT_NAME.
	AgentName string
	// VMMUIDBase is its WRENN_AGENT_VMM_UID_BASE; zero skips the uid
	// match (two agents sharing the default base cannot be told apart by
	// uid), leaving the command-line match.
	VMMUIDBase uint32
	// VMMUIDCount is how many uids above the base are VMMs'; zero means
	// DefaultVMMUIDCount.
	VMMUIDCount uint32
}

// Resource is one thing found.
type Resource struct {
	// Kind is one of the Kind constants.
	Kind string
	// Name says which: a path, an interface or table name, or a pid with
	// its command line.
	Name string
	// SandboxID is the sandbox the resource belongs to, when its name says.
	SandboxID string
}

// PerAgent reports whether r is one of the things an agent keeps for as
// long as it runs, sandboxes or not (nft-table, cgroup-parent,
// memory-dir).
func (r Resource) PerAgent() bool {
	switch r.Kind {
	case KindNFTTable, KindCgroupParent, KindMemoryDir:
		return true
	}
	return false
}

// Leaks keeps the resources that are leaks once every sandbox is
// destroyed: everything but templates, and, when agentRunning, but the
// per-agent ones.
func Leaks(rs []Resource, agentRunning bool) []Resource {
	var out []Resource
	for _, r := range rs {
		if r.Kind == KindTemplate || (agentRunning && r.PerAgent()) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// Format prints rs one per line ("kind name [sandbox id]"), for a test's
// failure message; "(none)" when empty.
func Format(rs []Resource) string {
	if len(rs) == 0 {
		return "(none)"
	}
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%-13s %s", r.Kind, r.Name)
		if r.SandboxID != "" {
			fmt.Fprintf(&b, " [sandbox %s]", r.SandboxID)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Runner runs a command and returns its standard output; the error
// carries its standard error.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// ExecRunner runs commands with os/exec.
func ExecRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Roots are where a Checker looks; tests point them at a fake tree.
type Roots struct {
	Proc     string // /proc
	Cgroup   string // /sys/fs/cgroup
	Shm      string // /dev/shm
	NetNSDir string // /run/netns
	// Run runs `ip` and `nft`.
	Run Runner
}

// DefaultRoots are the machine's.
func DefaultRoots() Roots {
	return Roots{Proc: "/proc", Cgroup: "/sys/fs/cgroup", Shm: "/dev/shm", NetNSDir: "/run/netns", Run: ExecRunner}
}

// List is DefaultRoots().List.
func List(ctx context.Context, s Scope) ([]Resource, error) {
	return DefaultRoots().List(ctx, s)
}

// nameRe is what the agent accepts as WRENN_AGENT_NAME.
var nameRe = regexp.MustCompile(`^[a-z0-9]{1,9}$`)

// List returns everything of s found under r, sorted by kind then name.
// It looks everywhere even when one place fails, and returns what it
// found with every failure joined.
func (r Roots) List(ctx context.Context, s Scope) ([]Resource, error) {
	if !filepath.IsAbs(s.Dir) {
		return nil, fmt.Errorf("leakcheck: Dir %q: want an absolute path", s.Dir)
	}
	if !nameRe.MatchString(s.AgentName) {
		return nil, fmt.Errorf("leakcheck: AgentName %q: want 1-9 of a-z, 0-9", s.AgentName)
	}
	s.Dir = filepath.Clean(s.Dir)
	if s.VMMUIDCount == 0 {
		s.VMMUIDCount = DefaultVMMUIDCount
	}
	var rs []Resource
	var errs []error
	for _, f := range []func(context.Context, Scope) ([]Resource, error){
		r.processes, r.netns, r.links, r.nftTables, r.cgroups, r.memory, dirs,
	} {
		if err := ctx.Err(); err != nil {
			return rs, err
		}
		got, err := f(ctx, s)
		rs = append(rs, got...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	slices.SortFunc(rs, func(a, b Resource) int {
		if c := strings.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return rs, errors.Join(errs...)
}

// slotName matches "<name>-<index>" with an optional "g" (an emulated
// guest's namespace), capturing nothing: slots carry no sandbox id.
func slotRe(name string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `-[0-9]+g?$`)
}

func (r Roots) processes(ctx context.Context, s Scope) ([]Resource, error) {
	ents, err := os.ReadDir(r.Proc)
	if err != nil {
		return nil, fmt.Errorf("leakcheck: list processes: %w", err)
	}
	dirPrefix := s.Dir + "/"
	var rs []Resource
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rs, err
		}
		raw, err := os.ReadFile(filepath.Join(r.Proc, e.Name(), "cmdline"))
		if err != nil {
			continue // exited since the listing, or a kernel thread race
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		uid, uidOK := procUID(filepath.Join(r.Proc, e.Name(), "status"))
		inRange := s.VMMUIDBase != 0 && uidOK && uid > s.VMMUIDBase && uid <= s.VMMUIDBase+s.VMMUIDCount
		mentions, sandboxID := false, ""
		for _, a := range args {
			if i := strings.Index(a, dirPrefix); i >= 0 || a == s.Dir {
				mentions = true
				if sandboxID == "" && i >= 0 {
					sandboxID = sandboxOf(a[i+len(dirPrefix):])
				}
			}
		}
		exe := filepath.Base(args[0])
		isVMM := strings.Contains(exe, "qemu") || strings.Contains(exe, "firecracker")
		kind := ""
		switch {
		case inRange, isVMM && mentions:
			kind = KindVMMProcess
		case mentions && sandboxID != "":
			kind = KindProcess
		default:
			continue
		}
		line := strings.Join(args, " ")
		if len(line) > 300 {
			line = line[:300] + "..."
		}
		name := fmt.Sprintf("pid %d", pid)
		if uidOK {
			name += fmt.Sprintf(" uid %d", uid)
		}
		rs = append(rs, Resource{Kind: kind, Name: name + ": " + line, SandboxID: sandboxID})
	}
	return rs, nil
}

// sandboxOf reads the sandbox id from a path relative to Dir:
// sandboxes/<id>/... or snapshots/<id>/....
func sandboxOf(rel string) string {
	for _, top := range []string{"sandboxes/", "snapshots/"} {
		if rest, ok := strings.CutPrefix(rel, top); ok {
			id, _, _ := strings.Cut(rest, "/")
			if top == "snapshots/" {
				id = snapshotOwner(id)
			}
			return id
		}
	}
	return ""
}

// procUID reads the real uid from a /proc/<pid>/status file.
func procUID(path string) (uint32, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			n, err := strconv.ParseUint(f[0], 10, 32)
			return uint32(n), err == nil
		}
	}
	return 0, false
}

func (r Roots) netns(_ context.Context, s Scope) ([]Resource, error) {
	ents, err := os.ReadDir(r.NetNSDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("leakcheck: list network namespaces: %w", err)
	}
	re := slotRe(s.AgentName)
	var rs []Resource
	for _, e := range ents {
		if re.MatchString(e.Name()) {
			rs = append(rs, Resource{Kind: KindNetNS, Name: e.Name()})
		}
	}
	return rs, nil
}

// links asks `ip -o link show` for the interfaces of the namespace List
// runs in. Its lines read "<index>: <name>[@<peer>]: <flags> ...".
func (r Roots) links(ctx context.Context, s Scope) ([]Resource, error) {
	out, err := r.Run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return nil, fmt.Errorf("leakcheck: list host links: %w", err)
	}
	re := slotRe(s.AgentName)
	var rs []Resource
	for line := range strings.Lines(string(out)) {
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 3 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		if re.MatchString(name) && !strings.HasSuffix(name, "g") {
			rs = append(rs, Resource{Kind: KindLink, Name: name})
		}
	}
	return rs, nil
}

// nftTables asks `nft list tables`, whose lines read "table <family> <name>".
func (r Roots) nftTables(ctx context.Context, s Scope) ([]Resource, error) {
	out, err := r.Run(ctx, "nft", "list", "tables")
	if err != nil {
		return nil, fmt.Errorf("leakcheck: list nftables tables: %w", err)
	}
	var rs []Resource
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "table" && f[1] == "inet" && f[2] == s.AgentName {
			rs = append(rs, Resource{Kind: KindNFTTable, Name: "inet " + f[2]})
		}
	}
	return rs, nil
}

// v1Controllers are the hierarchies the agent's v1 backend uses
// (internal/cgroup).
var v1Controllers = []string{"cpu", "cpuacct", "memory", "pids"}

func (r Roots) cgroups(_ context.Context, s Scope) ([]Resource, error) {
	var parents []string
	if _, err := os.Stat(filepath.Join(r.Cgroup, "cgroup.controllers")); err == nil {
		parents = []string{filepath.Join(r.Cgroup, s.AgentName)}
	} else {
		seen := map[string]bool{}
		for _, c := range v1Controllers {
			h, err := filepath.EvalSymlinks(filepath.Join(r.Cgroup, c))
			if err != nil || seen[h] {
				continue // not mounted, or co-mounted with one already seen
			}
			seen[h] = true
			parents = append(parents, filepath.Join(h, s.AgentName))
		}
		if len(parents) == 0 {
			return nil, fmt.Errorf("leakcheck: no cgroup v2 at %s and none of the v1 hierarchies %v under it", r.Cgroup, v1Controllers)
		}
	}
	var rs []Resource
	var errs []error
	for _, p := range parents {
		ents, err := os.ReadDir(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("leakcheck: list cgroup %s: %w", p, err))
			continue
		}
		rs = append(rs, Resource{Kind: KindCgroupParent, Name: p})
		for _, e := range ents {
			if e.IsDir() {
				rs = append(rs, Resource{Kind: KindCgroup, Name: filepath.Join(p, e.Name()), SandboxID: e.Name()})
			}
		}
	}
	return rs, errors.Join(errs...)
}

func (r Roots) memory(_ context.Context, s Scope) ([]Resource, error) {
	dir := filepath.Join(r.Shm, s.AgentName)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("leakcheck: list guest memory: %w", err)
	}
	rs := []Resource{{Kind: KindMemoryDir, Name: dir}}
	for _, e := range ents {
		rs = append(rs, Resource{Kind: KindMemoryFile, Name: filepath.Join(dir, e.Name()), SandboxID: strings.TrimSuffix(e.Name(), ".mem")})
	}
	return rs, nil
}

// trashPrefix and the fork directory's shape are the agent's
// (internal/agent/snapshot.go, fork.go).
const trashPrefix = ".trash-"

// snapshotOwner reads the sandbox id from a snapshots/ entry: <id> (a
// hibernation) or fork-<id>-<16 base32 chars> (a fork in flight).
func snapshotOwner(name string) string {
	if rest, ok := strings.CutPrefix(name, "fork-"); ok {
		if i := strings.LastIndexByte(rest, '-'); i > 0 {
			return rest[:i]
		}
	}
	if strings.HasPrefix(name, trashPrefix) {
		return ""
	}
	return name
}

func dirs(_ context.Context, s Scope) ([]Resource, error) {
	var rs []Resource
	var errs []error
	read := func(sub string) []os.DirEntry {
		ents, err := os.ReadDir(filepath.Join(s.Dir, sub))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("leakcheck: list %s: %w", filepath.Join(s.Dir, sub), err))
		}
		return ents
	}
	for _, e := range read("sandboxes") {
		rs = append(rs, Resource{Kind: KindSandboxDir, Name: filepath.Join(s.Dir, "sandboxes", e.Name()), SandboxID: e.Name()})
	}
	for _, e := range read("snapshots") {
		kind := KindSnapshotDir
		if strings.HasPrefix(e.Name(), trashPrefix) {
			kind = KindTrashDir
		}
		rs = append(rs, Resource{Kind: kind, Name: filepath.Join(s.Dir, "snapshots", e.Name()), SandboxID: snapshotOwner(e.Name())})
	}
	for _, e := range read("images") {
		p := filepath.Join(s.Dir, "images", e.Name())
		switch {
		case strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-"):
			rs = append(rs, Resource{Kind: KindTemplateTmp, Name: p})
		default:
			if fi, err := os.Stat(filepath.Join(p, "snapshot")); err == nil && fi.IsDir() {
				rs = append(rs, Resource{Kind: KindTemplate, Name: p})
			}
		}
	}
	return rs, errors.Join(errs...)
}
