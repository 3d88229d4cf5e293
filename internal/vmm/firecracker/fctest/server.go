// Package fctest is a fake of Firecracker's HTTP API for testing the
// firecracker driver on machines without Firecracker (or without KVM).
//
// Server answers the API routes the driver uses, records every request, and
// validates each one as Firecracker would: method and path, JSON body
// against the published swagger schema (unknown fields, missing required
// fields and wrong types are a 400 {"fault_message"}), and order (no
// pre-boot configuration after InstanceStart, no InstanceStart without a
// kernel and a root drive, snapshot/load only on a fresh process,
// snapshot/create only on a paused VM). No guest runs: "booting" flips a
// state and writes one console line.
//
// Main runs the same Server as a stand-in firecracker process (a test
// binary re-executed with ProcessEnv set), so process handling — pid file,
// attach, wait, stop — is testable end to end.
//
// The fake was written from Firecracker's documentation, not checked
// against a real Firecracker; where it is stricter than Firecracker (a root
// drive is required for InstanceStart) the comment says so.
package fctest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

// Instance states as GET / reports them (InstanceInfo.state).
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// Request is one API call the fake answered.
type Request struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
	Status int             `json:"status"`
	Fault  string          `json:"fault,omitempty"`
	// PID is the fake process's pid (Main only).
	PID int `json:"pid,omitempty"`
}

// Call is "METHOD /path", the form tests compare request sequences in.
func (r Request) Call() string { return r.Method + " " + r.Path }

// Options configures a Server.
type Options struct {
	// ID is reported by GET / (firecracker --id).
	ID string
	// Fail makes a call ("PUT /drives/rootfs") answer 400 with this fault
	// message instead of being handled.
	Fail map[string]string
	// Console receives the fake guest's serial output; discarded when nil.
	Console io.Writer
	// Record receives each request once answered.
	Record func(Request)
	// IgnoreCtrlAltDel makes a running guest accept SendCtrlAltDel and go
	// on running, as a guest kernel without an i8042 driver would.
	IgnoreCtrlAltDel bool
	// OnExit is called, at most once and after the response is written,
	// when real Firecracker would exit: the guest rebooted after
	// SendCtrlAltDel (code 0), or a snapshot load failed (code 1).
	OnExit func(code int)
}

// Server is the fake API. The zero value is not usable; call New.
type Server struct {
	opts Options

	mu         sync.Mutex
	state      string
	configured bool // a boot-specific resource was set: snapshot/load is refused
	loggerSet  bool
	cfg        vmConfig
	reqs       []Request
	exited     bool
}

// vmConfig is what the fake remembers of the configuration, and what its
// snapshot files carry so a load restores it.
type vmConfig struct {
	VCPUs      int64            `json:"vcpu_count"`
	MemMiB     int64            `json:"mem_size_mib"`
	TrackDirty bool             `json:"track_dirty_pages"`
	Kernel     string           `json:"kernel_image_path"`
	BootArgs   string           `json:"boot_args"`
	Drives     map[string]drive `json:"drives"`
	Ifaces     map[string]iface `json:"network_interfaces"`
}

type drive struct {
	Path     string `json:"path_on_host"`
	Root     bool   `json:"is_root_device"`
	ReadOnly bool   `json:"is_read_only"`
}

type iface struct {
	TAP string `json:"host_dev_name"`
	MAC string `json:"guest_mac"`
}

// snapshotMagic marks a vmstate file written by the fake.
const snapshotMagic = "fctest-vmstate-v1"

type snapshotFile struct {
	Magic  string   `json:"magic"`
	Config vmConfig `json:"config"`
}

// New returns a fresh fake in state "Not started", with Firecracker's
// defaults (1 vCPU, 128 MiB).
func New(opts Options) *Server {
	if opts.Console == nil {
		opts.Console = io.Discard
	}
	return &Server{opts: opts, state: StateNotStarted, cfg: vmConfig{
		VCPUs: 1, MemMiB: 128, Drives: map[string]drive{}, Ifaces: map[string]iface{},
	}}
}

// Requests returns every request answered so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// State is the instance state GET / would report.
func (s *Server) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Listen serves the fake on a new unix socket at path (which must not
// exist, as for Firecracker's --api-sock). Close the returned server to stop.
func (s *Server) Listen(path string) (*http.Server, error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on api socket: %w", err)
	}
	hs := &http.Server{Handler: s}
	go func() { _ = hs.Serve(l) }() // ends with hs.Close
	return hs, nil
}

// result is what handling one request produced.
type result struct {
	status int
	body   any    // JSON answer for 200
	fault  string // fault_message for 400
	exit   int    // >= 0: the process would exit with this code
}

func ok() result                       { return result{status: http.StatusNoContent, exit: -1} }
func fault(msg string) result          { return result{status: http.StatusBadRequest, fault: msg, exit: -1} }
func answer(body any) result           { return result{status: http.StatusOK, body: body, exit: -1} }
func faultf(f string, a ...any) result { return fault(fmt.Sprintf(f, a...)) }

const (
	errPostBoot = "The requested operation is not supported after starting the microVM."
	errPreBoot  = "The requested operation is not supported before starting the microVM."
)

// ServeHTTP answers one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	res := s.route(r.Method, r.URL.Path, body)
	exit := res.exit >= 0 && !s.exited
	if exit {
		s.exited = true
	}
	req := Request{Method: r.Method, Path: r.URL.Path, Status: res.status, Fault: res.fault}
	if json.Valid(body) {
		req.Body = json.RawMessage(body)
	} else if len(body) > 0 {
		req.Body, _ = json.Marshal(string(body))
	}
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	if s.opts.Record != nil {
		s.opts.Record(req)
	}

	w.Header().Set("Content-Type", "application/json")
	switch res.status {
	case http.StatusNoContent:
		w.WriteHeader(res.status)
	case http.StatusOK:
		w.WriteHeader(res.status)
		_ = json.NewEncoder(w).Encode(res.body)
	default:
		w.WriteHeader(res.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"fault_message": res.fault})
	}
	if exit && s.opts.OnExit != nil {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.opts.OnExit(res.exit)
	}
}

// route dispatches one request; s.mu is held.
func (s *Server) route(method, path string, body []byte) result {
	call := method + " " + path
	if msg, ok := s.opts.Fail[call]; ok {
		return fault(msg)
	}
	if s.exited {
		return fault("the process is exiting")
	}
	switch {
	case method == http.MethodGet && path == "/":
		return answer(map[string]string{
			"app_name": "Firecracker", "id": s.opts.ID, "state": s.state, "vmm_version": "fctest",
		})
	case method == http.MethodGet && path == "/machine-config":
		return answer(map[string]any{"vcpu_count": s.cfg.VCPUs, "mem_size_mib": s.cfg.MemMiB, "smt": false,
			"track_dirty_pages": s.cfg.TrackDirty})
	case method == http.MethodPut && path == "/logger":
		return s.putLogger(body)
	case method == http.MethodPut && path == "/machine-config":
		return s.putMachineConfig(body)
	case method == http.MethodPut && path == "/boot-source":
		return s.putBootSource(body)
	case method == http.MethodPut && path == "/actions":
		return s.putAction(body)
	case method == http.MethodPatch && path == "/vm":
		return s.patchVM(body)
	case method == http.MethodPut && path == "/snapshot/create":
		return s.createSnapshot(body)
	case method == http.MethodPut && path == "/snapshot/load":
		return s.loadSnapshot(body)
	}
	if id, ok := strings.CutPrefix(path, "/drives/"); ok && method == http.MethodPut && validID(id) {
		return s.putDrive(id, body)
	}
	if id, ok := strings.CutPrefix(path, "/network-interfaces/"); ok && method == http.MethodPut && validID(id) {
		return s.putNetworkInterface(id, body)
	}
	return faultf("Invalid request method and/or path: %s %s.", method, path)
}

func validID(id string) bool { return id != "" && !strings.Contains(id, "/") }

// decode validates body against sc, then unmarshals it into v.
func decode(sc *schema, body []byte, v any) (result, bool) {
	if msg := validate(sc, body); msg != "" {
		return fault(msg), false
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fault(deserializeError + err.Error()), false
	}
	return result{}, true
}

// preBoot refuses configuration of a started or restored VM.
func (s *Server) preBoot() (result, bool) {
	if s.state != StateNotStarted {
		return fault(errPostBoot), false
	}
	return result{}, true
}

func (s *Server) putLogger(body []byte) result {
	var v struct{}
	if res, ok := decode(loggerSchema, body, &v); !ok {
		return res
	}
	if s.loggerSet {
		return fault("Reinitialization of logger not allowed.")
	}
	s.loggerSet = true
	return ok()
}

func (s *Server) putMachineConfig(body []byte) result {
	var v struct {
		VCPUs      int64 `json:"vcpu_count"`
		MemMiB     int64 `json:"mem_size_mib"`
		SMT        bool  `json:"smt"`
		TrackDirty bool  `json:"track_dirty_pages"`
	}
	if res, ok := decode(machineConfigSchema, body, &v); !ok {
		return res
	}
	if res, ok := s.preBoot(); !ok {
		return res
	}
	if v.SMT && v.VCPUs > 1 && v.VCPUs%2 == 1 {
		return fault("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	if v.MemMiB == 0 {
		return fault("The memory size (MiB) is invalid.")
	}
	s.cfg.VCPUs, s.cfg.MemMiB, s.cfg.TrackDirty = v.VCPUs, v.MemMiB, v.TrackDirty
	s.configured = true
	return ok()
}

func (s *Server) putBootSource(body []byte) result {
	var v struct {
		Kernel   string `json:"kernel_image_path"`
		BootArgs string `json:"boot_args"`
	}
	if res, ok := decode(bootSourceSchema, body, &v); !ok {
		return res
	}
	if res, ok := s.preBoot(); !ok {
		return res
	}
	// Firecracker opens the kernel when the boot source is set.
	if err := readable(v.Kernel); err != nil {
		return faultf("The kernel file cannot be opened: %v", err)
	}
	s.cfg.Kernel, s.cfg.BootArgs = v.Kernel, v.BootArgs
	s.configured = true
	return ok()
}

func (s *Server) putDrive(id string, body []byte) result {
	var v struct {
		ID       string  `json:"drive_id"`
		Root     bool    `json:"is_root_device"`
		ReadOnly *bool   `json:"is_read_only"`
		Path     *string `json:"path_on_host"`
		Socket   *string `json:"socket"`
	}
	if res, ok := decode(driveSchema, body, &v); !ok {
		return res
	}
	if res, ok := s.preBoot(); !ok {
		return res
	}
	if v.ID != id {
		return fault("The id from the path does not match the id from the body!")
	}
	if v.Socket != nil {
		return fault("fctest: vhost-user block devices are not faked")
	}
	// The swagger marks both as required for a virtio-block drive.
	if v.Path == nil || v.ReadOnly == nil {
		return fault("Unable to create the block device: path_on_host and is_read_only are required for virtio-block")
	}
	if err := readable(*v.Path); err != nil {
		return faultf("Unable to create the block device: cannot open backing file: %v", err)
	}
	if v.Root {
		for other, d := range s.cfg.Drives {
			if d.Root && other != id {
				return fault("A root block device already exists!")
			}
		}
	}
	s.cfg.Drives[id] = drive{Path: *v.Path, Root: v.Root, ReadOnly: *v.ReadOnly}
	s.configured = true
	return ok()
}

func (s *Server) putNetworkInterface(id string, body []byte) result {
	var v struct {
		ID  string `json:"iface_id"`
		TAP string `json:"host_dev_name"`
		MAC string `json:"guest_mac"`
	}
	if res, ok := decode(networkInterfaceSchema, body, &v); !ok {
		return res
	}
	if res, ok := s.preBoot(); !ok {
		return res
	}
	if v.ID != id {
		return fault("The id from the path does not match the id from the body!")
	}
	if v.MAC != "" {
		if hw, err := net.ParseMAC(v.MAC); err != nil || len(hw) != 6 {
			return faultf("Invalid guest MAC address %q", v.MAC)
		}
	}
	for other, n := range s.cfg.Ifaces {
		if other != id && n.TAP == v.TAP {
			return faultf("The host device name %s is already in use.", v.TAP)
		}
	}
	// The TAP itself is not opened: the fake runs without one.
	s.cfg.Ifaces[id] = iface{TAP: v.TAP, MAC: v.MAC}
	s.configured = true
	return ok()
}

func (s *Server) putAction(body []byte) result {
	var v struct {
		Type string `json:"action_type"`
	}
	if res, ok := decode(actionSchema, body, &v); !ok {
		return res
	}
	switch v.Type {
	case "InstanceStart":
		if res, ok := s.preBoot(); !ok {
			return res
		}
		if s.cfg.Kernel == "" {
			return fault("Cannot start microvm without kernel configuration.")
		}
		// Stricter than Firecracker, which can boot from an initrd alone:
		// the driver must always attach its root disk.
		if !s.hasRoot() {
			return fault("fctest: InstanceStart without a root block device")
		}
		s.state = StateRunning
		fmt.Fprintf(s.opts.Console, "fctest: guest booted: kernel=%s args=%q vcpus=%d mem=%dMiB\n",
			s.cfg.Kernel, s.cfg.BootArgs, s.cfg.VCPUs, s.cfg.MemMiB)
		return ok()
	case "SendCtrlAltDel":
		if s.state == StateNotStarted {
			return fault(errPreBoot)
		}
		if s.state == StatePaused || s.opts.IgnoreCtrlAltDel {
			return ok() // queued in the i8042 device; a paused guest never reacts
		}
		// The guest (booted with reboot=k) resets through the keyboard
		// controller, and Firecracker exits.
		fmt.Fprintln(s.opts.Console, "fctest: guest rebooting after ctrl-alt-del")
		res := ok()
		res.exit = 0
		return res
	default: // FlushMetrics
		return fault("The metrics system was not initialized.")
	}
}

func (s *Server) hasRoot() bool {
	for _, d := range s.cfg.Drives {
		if d.Root {
			return true
		}
	}
	return false
}

func (s *Server) patchVM(body []byte) result {
	var v struct {
		State string `json:"state"`
	}
	if res, ok := decode(vmSchema, body, &v); !ok {
		return res
	}
	if s.state == StateNotStarted {
		return fault(errPreBoot)
	}
	// Repeating either request is accepted and changes nothing.
	if v.State == "Paused" {
		s.state = StatePaused
	} else {
		s.state = StateRunning
	}
	return ok()
}

func (s *Server) createSnapshot(body []byte) result {
	var v struct {
		Type    string `json:"snapshot_type"`
		State   string `json:"snapshot_path"`
		MemFile string `json:"mem_file_path"`
	}
	if res, ok := decode(snapshotCreateSchema, body, &v); !ok {
		return res
	}
	switch s.state {
	case StateNotStarted:
		return fault(errPreBoot)
	case StateRunning:
		return fault("Cannot create snapshot: the microVM is not paused.")
	}
	if v.Type == "Diff" && !s.cfg.TrackDirty {
		return fault("Diff snapshots are not allowed on uVMs with dirty page tracking disabled.")
	}
	b, _ := json.Marshal(snapshotFile{Magic: snapshotMagic, Config: s.cfg})
	if err := os.WriteFile(v.State, b, 0o600); err != nil {
		return faultf("Cannot save the microVM state: %v", err)
	}
	// Stands in for the guest's RAM; its size is not the guest's.
	if err := os.WriteFile(v.MemFile, fmt.Appendf(nil, "fctest memory %d MiB\n", s.cfg.MemMiB), 0o600); err != nil {
		return faultf("Cannot save the memory snapshot: %v", err)
	}
	return ok()
}

func (s *Server) loadSnapshot(body []byte) result {
	var v struct {
		State   string  `json:"snapshot_path"`
		MemFile *string `json:"mem_file_path"`
		Backend *struct {
			Type string `json:"backend_type"`
			Path string `json:"backend_path"`
		} `json:"mem_backend"`
		Resume    bool `json:"resume_vm"`
		Overrides []struct {
			ID  string `json:"iface_id"`
			TAP string `json:"host_dev_name"`
		} `json:"network_overrides"`
	}
	if res, ok := decode(snapshotLoadSchema, body, &v); !ok {
		return res
	}
	if s.state != StateNotStarted || s.configured {
		return fault("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	// From here on a failed load ends the process, as in Firecracker.
	fatal := func(r result) result { r.exit = 1; return r }
	if (v.MemFile == nil) == (v.Backend == nil) {
		return fatal(fault("Exactly one of mem_file_path and mem_backend must be given."))
	}
	memPath := ""
	if v.MemFile != nil {
		memPath = *v.MemFile
	} else if v.Backend.Type != "File" {
		return fatal(fault("fctest: only the File memory backend is faked"))
	} else {
		memPath = v.Backend.Path
	}
	b, err := os.ReadFile(v.State)
	if err != nil {
		return fatal(faultf("Load snapshot error: Cannot open the snapshot file: %v", err))
	}
	var snap snapshotFile
	if err := json.Unmarshal(b, &snap); err != nil || snap.Magic != snapshotMagic {
		return fatal(fault("Load snapshot error: Cannot deserialize the microVM state: not a snapshot"))
	}
	if err := readable(memPath); err != nil {
		return fatal(faultf("Load snapshot error: Cannot open the memory file: %v", err))
	}
	cfg := snap.Config
	for _, o := range v.Overrides {
		n, ok := cfg.Ifaces[o.ID]
		if !ok {
			return fatal(faultf("Load snapshot error: network override for unknown interface %s", o.ID))
		}
		n.TAP = o.TAP
		cfg.Ifaces[o.ID] = n
	}
	// Firecracker reopens the disks at their snapshot-time paths.
	for id, d := range cfg.Drives {
		if err := readable(d.Path); err != nil {
			return fatal(faultf("Load snapshot error: drive %s: %v", id, err))
		}
	}
	s.cfg = cfg
	s.state = StatePaused
	if v.Resume {
		s.state = StateRunning
	}
	fmt.Fprintf(s.opts.Console, "fctest: guest restored from %s (%s)\n", v.State, s.state)
	return ok()
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}
