package fctest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The request bodies the fake accepts, transcribed from the definitions in
// Firecracker's src/firecracker/swagger/firecracker.yaml (v1.17.0-dev).
// Firecracker parses bodies with serde and deny_unknown_fields, so an unknown
// field, a missing required field or a wrong JSON type is a 400; the fake
// does the same. Only the bodies of the routes the fake serves are here.

type kind int

const (
	kString kind = iota
	kBool
	kInt
	kObject
	kArray
)

func (k kind) String() string {
	return [...]string{"a string", "a boolean", "an integer", "an object", "an array"}[k]
}

type field struct {
	kind     kind
	enum     []string // kString: allowed values
	foldEnum bool     // enum compared case-insensitively
	min, max int64    // kInt: inclusive range; max 0 means unbounded
	obj      *schema  // kObject: its schema; kArray: the items' schema
}

type schema struct {
	name     string
	fields   map[string]field
	required []string
}

func str() field                      { return field{kind: kString} }
func boolean() field                  { return field{kind: kBool} }
func integer(min, max int64) field    { return field{kind: kInt, min: min, max: max} }
func enum(vals ...string) field       { return field{kind: kString, enum: vals} }
func object(s *schema) field          { return field{kind: kObject, obj: s} }
func arrayOf(s *schema) field         { return field{kind: kArray, obj: s} }
func foldedEnum(vals ...string) field { return field{kind: kString, enum: vals, foldEnum: true} }

var (
	tokenBucketSchema = &schema{name: "TokenBucket", fields: map[string]field{
		"one_time_burst": integer(0, 0), "refill_time": integer(0, 0), "size": integer(0, 0),
	}, required: []string{"refill_time", "size"}}

	rateLimiterSchema = &schema{name: "RateLimiter", fields: map[string]field{
		"bandwidth": object(tokenBucketSchema), "ops": object(tokenBucketSchema),
	}}

	loggerSchema = &schema{name: "Logger", fields: map[string]field{
		"level":           foldedEnum("Error", "Warning", "Info", "Debug", "Trace", "Off"),
		"log_path":        str(),
		"show_level":      boolean(),
		"show_log_origin": boolean(),
		"module":          str(),
	}}

	machineConfigSchema = &schema{name: "MachineConfiguration", fields: map[string]field{
		"cpu_template":      enum("C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"),
		"smt":               boolean(),
		"mem_size_mib":      integer(0, 0),
		"track_dirty_pages": boolean(),
		"vcpu_count":        integer(1, 32),
		"huge_pages":        enum("None", "Transparent", "2M"),
	}, required: []string{"mem_size_mib", "vcpu_count"}}

	bootSourceSchema = &schema{name: "BootSource", fields: map[string]field{
		"boot_args": str(), "initrd_path": str(), "kernel_image_path": str(),
	}, required: []string{"kernel_image_path"}}

	driveSchema = &schema{name: "Drive", fields: map[string]field{
		"drive_id":       str(),
		"partuuid":       str(),
		"is_root_device": boolean(),
		"cache_type":     enum("Unsafe", "Writeback"),
		"is_read_only":   boolean(),
		"path_on_host":   str(),
		"rate_limiter":   object(rateLimiterSchema),
		"io_engine":      enum("Sync", "Async"),
		"socket":         str(),
	}, required: []string{"drive_id", "is_root_device"}}

	networkInterfaceSchema = &schema{name: "NetworkInterface", fields: map[string]field{
		"guest_mac":       str(),
		"host_dev_name":   str(),
		"iface_id":        str(),
		"mtu":             integer(68, 65535),
		"rx_rate_limiter": object(rateLimiterSchema),
		"tx_rate_limiter": object(rateLimiterSchema),
	}, required: []string{"host_dev_name", "iface_id"}}

	actionSchema = &schema{name: "InstanceActionInfo", fields: map[string]field{
		"action_type": enum("FlushMetrics", "InstanceStart", "SendCtrlAltDel"),
	}, required: []string{"action_type"}}

	vmSchema = &schema{name: "Vm", fields: map[string]field{
		"state": enum("Paused", "Resumed"),
	}, required: []string{"state"}}

	snapshotCreateSchema = &schema{name: "SnapshotCreateParams", fields: map[string]field{
		"mem_file_path": str(), "snapshot_path": str(), "snapshot_type": enum("Full", "Diff"),
	}, required: []string{"mem_file_path", "snapshot_path"}}

	memoryBackendSchema = &schema{name: "MemoryBackend", fields: map[string]field{
		"backend_type": enum("File", "Uffd"), "backend_path": str(),
	}, required: []string{"backend_type", "backend_path"}}

	networkOverrideSchema = &schema{name: "NetworkOverride", fields: map[string]field{
		"iface_id": str(), "host_dev_name": str(),
	}, required: []string{"iface_id", "host_dev_name"}}

	vsockOverrideSchema = &schema{name: "VsockOverride", fields: map[string]field{
		"uds_path": str(),
	}, required: []string{"uds_path"}}

	snapshotLoadSchema = &schema{name: "SnapshotLoadParams", fields: map[string]field{
		"enable_diff_snapshots": boolean(),
		"track_dirty_pages":     boolean(),
		"mem_file_path":         str(),
		"mem_backend":           object(memoryBackendSchema),
		"snapshot_path":         str(),
		"resume_vm":             boolean(),
		"network_overrides":     arrayOf(networkOverrideSchema),
		"vsock_override":        object(vsockOverrideSchema),
		"clock_realtime":        boolean(),
	}, required: []string{"snapshot_path"}}
)

// deserializeError is the prefix Firecracker puts before serde's message.
const deserializeError = "An error occurred when deserializing the json body of a request: "

// validate checks body against s the way serde with deny_unknown_fields
// would, and returns Firecracker-style fault text, or "" when body is valid.
func validate(s *schema, body []byte) string {
	if len(bytes.TrimSpace(body)) == 0 {
		return "The body of the request is empty."
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return deserializeError + err.Error()
	}
	if dec.More() {
		return deserializeError + "trailing characters"
	}
	if msg := checkObject(s, v, ""); msg != "" {
		return deserializeError + msg
	}
	return ""
}

func checkObject(s *schema, v any, at string) string {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprintf("invalid type at %q: expected struct %s", at, s.name)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic messages
	for _, k := range keys {
		f, known := s.fields[k]
		if !known {
			return fmt.Sprintf("unknown field `%s`, expected one of %s", k, expected(s))
		}
		if msg := checkField(f, m[k], joinPath(at, k)); msg != "" {
			return msg
		}
	}
	for _, r := range s.required {
		if _, ok := m[r]; !ok {
			return fmt.Sprintf("missing field `%s` in %s", r, s.name)
		}
	}
	return ""
}

func checkField(f field, v any, at string) string {
	wrongType := func() string { return fmt.Sprintf("invalid type at %q: expected %s", at, f.kind) }
	switch f.kind {
	case kString:
		s, ok := v.(string)
		if !ok {
			return wrongType()
		}
		if f.enum == nil {
			return ""
		}
		for _, e := range f.enum {
			if s == e || (f.foldEnum && strings.EqualFold(s, e)) {
				return ""
			}
		}
		return fmt.Sprintf("unknown variant `%s` at %q, expected one of %s", s, at, quoteAll(f.enum))
	case kBool:
		if _, ok := v.(bool); !ok {
			return wrongType()
		}
	case kInt:
		n, ok := v.(json.Number)
		if !ok {
			return wrongType()
		}
		i, err := n.Int64()
		if err != nil {
			return fmt.Sprintf("invalid type at %q: floating point `%s`, expected an integer", at, n)
		}
		if i < f.min || (f.max != 0 && i > f.max) {
			return fmt.Sprintf("invalid value at %q: integer `%d` out of range", at, i)
		}
	case kObject:
		return checkObject(f.obj, v, at)
	case kArray:
		items, ok := v.([]any)
		if !ok {
			return wrongType()
		}
		for i, it := range items {
			if msg := checkObject(f.obj, it, fmt.Sprintf("%s[%d]", at, i)); msg != "" {
				return msg
			}
		}
	}
	return ""
}

func expected(s *schema) string {
	names := make([]string, 0, len(s.fields))
	for k := range s.fields {
		names = append(names, k)
	}
	slices.Sort(names)
	return quoteAll(names)
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "`" + n + "`"
	}
	return strings.Join(q, ", ")
}

func joinPath(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}
