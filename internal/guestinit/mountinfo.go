package guestinit

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// parseMountinfo reads /proc/self/mountinfo and returns the filesystem type
// mounted at each mount point (the last mount wins, as in the namespace).
func parseMountinfo(r io.Reader) (map[string]string, error) {
	mounts := make(map[string]string)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		postFields := strings.Fields(post)
		if !ok || len(fields) < 5 || len(postFields) < 1 {
			return nil, fmt.Errorf("parse mountinfo line %q: malformed", line)
		}
		mounts[unescapeOctal(fields[4])] = postFields[0]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeOctal undoes the kernel's \ooo escaping of space, tab, newline and
// backslash in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountSpec is one filesystem wrenn-init mounts at boot.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// needsMount reports whether spec still has to be mounted, given what
// mountinfo shows: a mount of the same type at the target (the kernel's
// devtmpfs automount, or a previous run) is left alone.
func needsMount(spec mountSpec, mounted map[string]string) bool {
	return mounted[spec.target] != spec.fstype
}

// ueventDevName returns DEVNAME from a sysfs uevent file.
func ueventDevName(uevent string) (string, error) {
	for _, line := range strings.Split(uevent, "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("no DEVNAME in uevent %q", uevent)
}
