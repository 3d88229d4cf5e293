package builder

import (
	"context"
	"io"
	"io/fs"

	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/templates/buildctx"
)

// VMs boots build VMs (the host agent's Manager, through an adapter).
type VMs interface {
	StartBuildVM(ctx context.Context, spec VMSpec) (VM, error)
}

// VMSpec is one build VM.
type VMSpec struct {
	ID     string
	TeamID string
	// Work is the build's raw work image, which the VM takes until Finish
	// or Discard; or Template, whose image the VM boots an overlay on.
	Work     string
	Template string
	VCPUs    int
	MemoryMB int
	DiskMB   int
	Env      map[string]string
	User     string
	Workdir  string
	Network  network.Policy
}

// VM is a running build VM.
type VM interface {
	Envd(ctx context.Context) (*envdclient.Client, error)
	// Address is where the host reaches the guest's ports.
	Address(ctx context.Context) (string, error)
	// Touch keeps the VM from the host's idle reaper.
	Touch()
	// SaveLayer keeps the VM's disk as it is now as a qcow2 layer over
	// parent.
	SaveLayer(ctx context.Context, layer, parent string, parentFormat disk.Format) error
	// Finish stops the VM and hands its work image back, with what the
	// VM wrote folded in.
	Finish(ctx context.Context) error
	// SnapshotTemplate takes the VM's memory and disk as the snapshot of
	// the template it booted from.
	SnapshotTemplate(ctx context.Context, name string) error
	// Discard destroys the VM (and any work image it holds).
	Discard(ctx context.Context) error
}

// ImageBase is an OCI image as a raw ext4 base with Wrenn's files in it.
type ImageBase struct {
	// Path is the raw image (kept by Images, cached by Digest).
	Path string
	// Digest is the image's manifest digest with Wrenn's files' identity:
	// the base's cache key.
	Digest string
	// Env, User, Workdir, Entrypoint and Cmd are the image's config.
	Env        map[string]string
	User       string
	Workdir    string
	Entrypoint []string
	Cmd        []string
	// Install are packages Wrenn needs that the image lacks, and
	// PackageManager how to install them ("apt" or "").
	Install        []string
	PackageManager string
}

// Context is the build context the copies read (*buildctx.Context).
type Context interface {
	// Digest is the content identity of what sources resolve to.
	Digest(sources []string) (string, error)
	// WriteTar writes a copy's files as a tar stream whose names are
	// relative to the image's root, laid out as Docker's COPY to dest.
	WriteTar(ctx context.Context, w io.Writer, sources []string, dest string, chown buildctx.UIDGID, chmod fs.FileMode) error
}
