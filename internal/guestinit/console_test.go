package guestinit

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleHandler(t *testing.T) {
	tests := []struct {
		name string
		log  func(*slog.Logger)
		want string
	}{
		{
			name: "info has no level",
			log:  func(l *slog.Logger) { l.Info("envd started", "pid", 42, "uptime_ms", int64(612)) },
			want: "wrenn-init: envd started pid=42 uptime_ms=612\n",
		},
		{
			name: "warn with quoted error",
			log:  func(l *slog.Logger) { l.Warn("step failed", "step", "mount", "err", errors.New("mount proc: busy")) },
			want: "wrenn-init: WARN step failed step=mount err=\"mount proc: busy\"\n",
		},
		{
			name: "debug dropped",
			log:  func(l *slog.Logger) { l.Debug("noise") },
			want: "",
		},
		{
			name: "with attrs and group",
			log: func(l *slog.Logger) {
				l.With("sandbox", "s1").WithGroup("net").Info("up", "ip", "169.254.0.21/30", slog.Group("gw", "addr", "169.254.0.22"))
			},
			want: "wrenn-init: up sandbox=s1 net.ip=169.254.0.21/30 net.gw.addr=169.254.0.22\n",
		},
		{
			name: "empty value quoted",
			log:  func(l *slog.Logger) { l.Info("x", "v", "") },
			want: "wrenn-init: x v=\"\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(NewConsoleHandler(&buf)))
			if buf.String() != tt.want {
				t.Errorf("got %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

func TestUptimeMillis(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0.61 0.20\n", 610, false},
		{"12345.07 99.00", 12345070, false},
		{"3 1", 3000, false},
		{"1.5", 1500, false},
		{"", 0, true},
		{"abc 1", 0, true},
		{"1.x 2", 0, true},
		{"-1.00 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := uptimeMillis(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("uptimeMillis(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCappedFileRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envd.log")
	c, err := openCappedFile(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"aaaa\n", "bbbb\n", "cccc\n", "dd\n"} {
		if n, err := c.Write([]byte(w)); err != nil || n != len(w) {
			t.Fatalf("write %q: n=%d err=%v", w, n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want string }{
		{path, "cccc\ndd\n"},
		{path + ".1", "aaaa\nbbbb\n"},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			b, err := os.ReadFile(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("%s = %q, want %q", tt.path, b, tt.want)
			}
		})
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("write after close succeeded")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("console gone") }

func TestTeeWriterIgnoresFailures(t *testing.T) {
	var a, b bytes.Buffer
	n, err := teeWriter{&a, failWriter{}, nil, &b}.Write([]byte("line\n"))
	if err != nil || n != 5 {
		t.Fatalf("Write = %d, %v; want 5, nil", n, err)
	}
	if a.String() != "line\n" || b.String() != "line\n" {
		t.Errorf("writers got %q and %q", a.String(), b.String())
	}
}

func TestParseMountinfo(t *testing.T) {
	const info = `22 1 254:0 / / rw,relatime - ext4 /dev/root rw
23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=246248k,mode=755
24 22 0:21 / /proc rw,nosuid,nodev,noexec shared:12 - proc proc rw
25 22 0:22 / /mnt/with\040space rw master:1 - tmpfs tmpfs rw
26 23 0:23 / /dev/shm rw - tmpfs shm rw
`
	got, err := parseMountinfo(strings.NewReader(info))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"/": "ext4", "/dev": "devtmpfs", "/proc": "proc", "/mnt/with space": "tmpfs", "/dev/shm": "tmpfs"}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	if _, err := parseMountinfo(strings.NewReader("garbage line\n")); err == nil {
		t.Error("malformed mountinfo parsed without error")
	}
}

func TestNeedsMount(t *testing.T) {
	mounted := map[string]string{"/dev": "devtmpfs", "/proc": "proc"}
	tests := []struct {
		name string
		spec mountSpec
		want bool
	}{
		{"devtmpfs automounted", mountSpec{target: "/dev", fstype: "devtmpfs"}, false},
		{"not mounted", mountSpec{target: "/run", fstype: "tmpfs"}, true},
		{"different type mounted", mountSpec{target: "/proc", fstype: "tmpfs"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := needsMount(tt.spec, mounted); got != tt.want {
				t.Errorf("needsMount = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := []struct{ in, want string }{
		{`/plain`, `/plain`},
		{`/a\040b`, `/a b`},
		{`/tab\011x\134y`, "/tab\tx\\y"},
		{`/trailing\04`, `/trailing\04`},
		{`/bad\999`, `/bad\999`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := unescapeOctal(tt.in); got != tt.want {
				t.Errorf("unescapeOctal(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestUeventDevName(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"virtio disk", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n", "vda", false},
		{"missing", "MAJOR=254\n", "", true},
		{"empty value", "DEVNAME=\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ueventDevName(tt.in)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("ueventDevName = %q, %v; want %q, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
