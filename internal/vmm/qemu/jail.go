package qemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// systemPaths carry QEMU's shared libraries, its firmware (microvm's
// bios-microvm.bin) and modules into the jail, read-only. /usr holds them
// on merged-/usr systems; the others are for systems that are not, and
// are skipped where absent (a symlink such as /lib -> usr/lib is followed,
// which binds /usr/lib a second time at /lib).
var systemPaths = []string{"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc/ld.so.cache"}

// maxBackingChain bounds how far jailFor follows a qcow2 chain (forks of
// forks); deeper chains are refused rather than half-carried.
const maxBackingChain = 32

// jailFor is the file system QEMU needs for spec: its binary and libraries,
// the kernel, the root disk and every backing file under it read-only, the
// sandbox directory (sockets, pid file, overlay) and the memory file
// read-write, and only the devices it opens.
func jailFor(spec vmm.Spec, bin string, accel Accel) (*vmmproc.Jail, error) {
	j := &vmmproc.Jail{
		ReadOnly:  []string{bin, spec.Kernel},
		ReadWrite: []string{spec.Dir},
		Devices:   []string{"/dev/null", "/dev/urandom"},
	}
	j.ReadOnly = append(j.ReadOnly, systemPaths...)
	if spec.MemoryFile != "" {
		j.ReadWrite = append(j.ReadWrite, spec.MemoryFile)
	}
	if spec.Net != nil {
		j.Devices = append(j.Devices, "/dev/net/tun")
	}
	if accel == AccelKVM {
		j.Devices = append(j.Devices, "/dev/kvm")
	}
	if d := spec.RootDisk; d.Path != "" && exists(d.Path) {
		if d.ReadOnly {
			j.ReadOnly = append(j.ReadOnly, d.Path)
		} else {
			j.ReadWrite = append(j.ReadWrite, d.Path)
		}
		if d.Format == "qcow2" {
			chain, err := backingChain(d.Path)
			if err != nil {
				return nil, err
			}
			j.ReadOnly = append(j.ReadOnly, chain...)
		}
	}
	// A missing file is left for QEMU to report ("could not load kernel"),
	// with its own words, as without the jail.
	j.ReadOnly = slices.DeleteFunc(j.ReadOnly, func(p string) bool { return !exists(p) })
	j.Devices = slices.DeleteFunc(j.Devices, func(p string) bool { return !exists(p) })
	return j, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// qcow2Magic starts every qcow2 image ("QFI\xfb").
const qcow2Magic = 0x514649fb

// backingChain lists the backing files below the qcow2 image at path,
// nearest first, as QEMU resolves them (a relative name is relative to the
// directory of the image naming it). A raw image ends the chain.
func backingChain(path string) ([]string, error) {
	var chain []string
	for cur := path; ; {
		next, err := backingFile(cur)
		if err != nil {
			return nil, errdefs.FromOS(fmt.Errorf("backing chain of %s: %w", path, err))
		}
		if next == "" {
			return chain, nil
		}
		if !filepath.IsAbs(next) {
			next = filepath.Join(filepath.Dir(cur), next)
		}
		if len(chain) == maxBackingChain {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "backing chain of %s: longer than %d images", path, maxBackingChain)
		}
		chain = append(chain, next)
		cur = next
	}
}

// backingFile reads the backing file name from a qcow2 header: "" for an
// image without one or one that is not qcow2.
func backingFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var hdr [20]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", nil // too short for qcow2: raw
		}
		return "", err
	}
	if binary.BigEndian.Uint32(hdr[0:4]) != qcow2Magic {
		return "", nil
	}
	off := binary.BigEndian.Uint64(hdr[8:16])
	size := binary.BigEndian.Uint32(hdr[16:20])
	if off == 0 || size == 0 {
		return "", nil
	}
	// QEMU caps the name at 1023 bytes.
	if size > 1023 {
		return "", fmt.Errorf("%s: backing file name of %d bytes", path, size)
	}
	name := make([]byte, size)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("%s: read backing file name: %w", path, err)
	}
	return string(name), nil
}
