package fctest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type step struct {
	method, path, body string
	status             int
	fault              string // substring of fault_message
}

// run sends steps to a fresh fake in order and checks each answer.
func run(t *testing.T, s *Server, steps []step) {
	t.Helper()
	for i, st := range steps {
		req := httptest.NewRequest(st.method, st.path, strings.NewReader(st.body))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != st.status {
			t.Fatalf("step %d %s %s %s: status %d (%s), want %d", i, st.method, st.path, st.body, rec.Code, rec.Body, st.status)
		}
		if st.status == http.StatusBadRequest {
			var f struct {
				Fault string `json:"fault_message"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &f); err != nil || f.Fault == "" {
				t.Fatalf("step %d: 400 without fault_message: %q", i, rec.Body)
			}
			if !strings.Contains(f.Fault, st.fault) {
				t.Fatalf("step %d %s %s: fault %q, want it to contain %q", i, st.method, st.path, f.Fault, st.fault)
			}
		}
	}
}

// files makes a kernel and a disk the fake can open.
func files(t *testing.T) (kernel, disk string) {
	dir := t.TempDir()
	kernel, disk = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "rootfs")
	for _, p := range []string{kernel, disk} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return kernel, disk
}

func TestBodiesAreValidatedAgainstTheSchema(t *testing.T) {
	kernel, disk := files(t)
	for _, tc := range []struct {
		name        string
		path, body  string
		status      int
		faultSubstr string
	}{
		{"valid machine config", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":false}`, 204, ""},
		{"unknown field", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256,"cpus":2}`, 400, "unknown field `cpus`"},
		{"missing required", "/machine-config", `{"vcpu_count":2}`, 400, "missing field `mem_size_mib`"},
		{"string for integer", "/machine-config", `{"vcpu_count":"2","mem_size_mib":256}`, 400, "expected an integer"},
		{"float for integer", "/machine-config", `{"vcpu_count":1.5,"mem_size_mib":256}`, 400, "expected an integer"},
		{"vcpus out of range", "/machine-config", `{"vcpu_count":33,"mem_size_mib":256}`, 400, "out of range"},
		{"negative memory", "/machine-config", `{"vcpu_count":1,"mem_size_mib":-1}`, 400, "out of range"},
		{"bad enum", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"huge_pages":"1G"}`, 400, "unknown variant `1G`"},
		{"not json", "/machine-config", `{vcpu_count:1}`, 400, "deserializing the json body"},
		{"empty body", "/machine-config", ``, 400, "empty"},
		{"array body", "/machine-config", `[]`, 400, "expected struct MachineConfiguration"},
		{"two documents", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}{}`, 400, "trailing"},
		{"valid boot source", "/boot-source", `{"kernel_image_path":"` + kernel + `","boot_args":"console=ttyS0"}`, 204, ""},
		{"boot source without kernel", "/boot-source", `{"boot_args":"x"}`, 400, "missing field `kernel_image_path`"},
		{"kernel missing on disk", "/boot-source", `{"kernel_image_path":"/nonexistent"}`, 400, "kernel file cannot be opened"},
		{"valid drive", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"` + disk + `","is_root_device":true,"is_read_only":false}`, 204, ""},
		{"drive id mismatch", "/drives/other", `{"drive_id":"rootfs","path_on_host":"` + disk + `","is_root_device":true,"is_read_only":false}`, 400, "does not match"},
		{"drive bool as string", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"` + disk + `","is_root_device":"true","is_read_only":false}`, 400, "expected a boolean"},
		{"drive without read-only", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"` + disk + `","is_root_device":true}`, 400, "is_read_only"},
		{"nested unknown field", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"` + disk + `","is_root_device":true,"is_read_only":false,"rate_limiter":{"bandwidth":{"size":1,"refill_time":1,"burst":2}}}`, 400, "unknown field `burst`"},
		{"valid nic", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"02:fc:00:00:00:01"}`, 204, ""},
		{"nic without tap", "/network-interfaces/eth0", `{"iface_id":"eth0"}`, 400, "missing field `host_dev_name`"},
		{"nic bad mac", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"nope"}`, 400, "MAC"},
		{"logger level case-insensitive", "/logger", `{"level":"debug"}`, 204, ""},
		{"unknown action", "/actions", `{"action_type":"Reboot"}`, 400, "unknown variant `Reboot`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, New(Options{}), []step{{http.MethodPut, tc.path, tc.body, tc.status, tc.faultSubstr}})
		})
	}
}

func TestRequestOrderIsEnforced(t *testing.T) {
	kernel, disk := files(t)
	snapDir := t.TempDir()
	mc := `{"vcpu_count":1,"mem_size_mib":128}`
	bs := `{"kernel_image_path":"` + kernel + `"}`
	dr := `{"drive_id":"rootfs","path_on_host":"` + disk + `","is_root_device":true,"is_read_only":false}`
	start := `{"action_type":"InstanceStart"}`
	paused, resumed := `{"state":"Paused"}`, `{"state":"Resumed"}`
	create := `{"snapshot_type":"Full","snapshot_path":"` + filepath.Join(snapDir, "vmstate") + `","mem_file_path":"` + filepath.Join(snapDir, "mem") + `"}`
	load := `{"snapshot_path":"` + filepath.Join(snapDir, "vmstate") + `","mem_backend":{"backend_type":"File","backend_path":"` + filepath.Join(snapDir, "mem") + `"},"resume_vm":true}`
	put, patch := http.MethodPut, http.MethodPatch

	boot := []step{
		{put, "/machine-config", mc, 204, ""},
		{put, "/boot-source", bs, 204, ""},
		{put, "/drives/rootfs", dr, 204, ""},
		{put, "/actions", start, 204, ""},
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"start without kernel", []step{{put, "/drives/rootfs", dr, 204, ""}, {put, "/actions", start, 400, "without kernel"}}},
		{"start without root drive", []step{{put, "/boot-source", bs, 204, ""}, {put, "/actions", start, 400, "root block device"}}},
		{"second root drive", []step{{put, "/drives/rootfs", dr, 204, ""},
			{put, "/drives/other", strings.Replace(dr, `"rootfs"`, `"other"`, 1), 400, "root block device already exists"}}},
		{"pause before start", []step{{patch, "/vm", paused, 400, "before starting"}}},
		{"configure after start", append(boot[:4:4], step{put, "/machine-config", mc, 400, "after starting"})},
		{"start twice", append(boot[:4:4], step{put, "/actions", start, 400, "after starting"})},
		{"snapshot while running", append(boot[:4:4], step{put, "/snapshot/create", create, 400, "not paused"})},
		{"snapshot before start", []step{{put, "/snapshot/create", create, 400, "before starting"}}},
		{"pause snapshot resume", append(boot[:4:4],
			step{patch, "/vm", paused, 204, ""}, step{patch, "/vm", paused, 204, ""},
			step{put, "/snapshot/create", create, 204, ""}, step{patch, "/vm", resumed, 204, ""})},
		{"load after config", []step{{put, "/machine-config", mc, 204, ""}, {put, "/snapshot/load", load, 400, "not allowed after configuring"}}},
		{"load after logger is allowed", []step{{put, "/logger", `{"level":"Info"}`, 204, ""}, {put, "/snapshot/load", load, 204, ""},
			{put, "/machine-config", mc, 400, "after starting"}}},
		{"load with both memory fields", []step{{put, "/snapshot/load", strings.Replace(load, `"resume_vm"`, `"mem_file_path":"x","resume_vm"`, 1), 400, "Exactly one"}}},
		{"unknown route", []step{{put, "/drives", dr, 400, "Invalid request method and/or path"}, {http.MethodDelete, "/vm", "", 400, "Invalid request"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The snapshot "pause snapshot resume" writes is what the load
			// cases read; it runs first among them.
			run(t, New(Options{}), tc.steps)
		})
	}
}

func TestLoadRestoresStateAndFailedLoadExits(t *testing.T) {
	kernel, disk := files(t)
	snapDir := t.TempDir()
	var console bytes.Buffer
	s := New(Options{Console: &console})
	run(t, s, []step{
		{http.MethodPut, "/machine-config", `{"vcpu_count":2,"mem_size_mib":64}`, 204, ""},
		{http.MethodPut, "/boot-source", `{"kernel_image_path":"` + kernel + `"}`, 204, ""},
		{http.MethodPut, "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"` + disk + `","is_root_device":true,"is_read_only":true}`, 204, ""},
		{http.MethodPut, "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`, 204, ""},
		{http.MethodPut, "/actions", `{"action_type":"InstanceStart"}`, 204, ""},
		{http.MethodPatch, "/vm", `{"state":"Paused"}`, 204, ""},
		{http.MethodPut, "/snapshot/create", `{"snapshot_path":"` + filepath.Join(snapDir, "s") + `","mem_file_path":"` + filepath.Join(snapDir, "m") + `"}`, 204, ""},
	})
	if !strings.Contains(console.String(), "guest booted") {
		t.Fatalf("console %q", console.String())
	}

	exits := 0
	r := New(Options{OnExit: func(code int) {
		if code != 0 {
			exits++
		}
	}})
	load := `{"snapshot_path":"` + filepath.Join(snapDir, "s") + `","mem_backend":{"backend_type":"File","backend_path":"` + filepath.Join(snapDir, "m") + `"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap7"}]}`
	run(t, r, []step{{http.MethodPut, "/snapshot/load", load, 204, ""}})
	if r.State() != StatePaused {
		t.Fatalf("state after load without resume_vm = %q, want Paused", r.State())
	}
	if got := r.cfg.Ifaces["eth0"].TAP; got != "tap7" || r.cfg.VCPUs != 2 {
		t.Fatalf("restored config %+v", r.cfg)
	}

	bad := New(Options{OnExit: func(code int) { exits += code }})
	run(t, bad, []step{{http.MethodPut, "/snapshot/load", `{"snapshot_path":"/nonexistent","mem_backend":{"backend_type":"File","backend_path":"/nonexistent"}}`, 400, "Cannot open the snapshot file"}})
	if exits != 1 {
		t.Fatalf("failed load: %d exits with a non-zero code, want 1", exits)
	}
	if reqs := bad.Requests(); len(reqs) != 1 || reqs[0].Status != 400 || reqs[0].Call() != "PUT /snapshot/load" {
		t.Fatalf("recorded %+v", reqs)
	}
}
