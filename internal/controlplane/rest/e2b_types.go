package rest

// The E2B-compatible surface's wire shapes, matched field by field to what
// E2B's SDKs (JS e2b 2.51, Python e2b 2.63) send and read. Field names
// follow E2B, casing quirks included (allow_internet_access is snake case
// in a camel-case API).

import (
	"encoding/json"
	"time"
)

// EnvdVersion is the E2B envd version Wrenn's envd answers for: the SDKs
// switch features on it (see docs/e2b-compat.md). Every feature the SDKs
// gate at or below 0.6.1 is implemented (default user, octet-stream
// uploads, CloseStdin, stdin flag, recursive watch, metrics); file
// metadata (0.6.2) is not, so the SDK refuses it before sending rather
// than Wrenn dropping it.
const EnvdVersion = "0.6.1"

// e2bError is E2B's error body: code is the HTTP status as a number;
// error_code is Wrenn's machine-readable kind.
type e2bError struct {
	Code      int    `json:"code"`
	Message   string `json:"message"`
	ErrorCode string `json:"error_code,omitempty"`
}

// e2bNetwork is E2B's network configuration (create and update).
type e2bNetwork struct {
	AllowOut           []string        `json:"allowOut,omitempty"`
	DenyOut            []string        `json:"denyOut,omitempty"`
	AllowPublicTraffic *bool           `json:"allowPublicTraffic,omitempty"`
	MaskRequestHost    *string         `json:"maskRequestHost,omitempty"`
	EgressProxy        json.RawMessage `json:"egressProxy,omitempty"`
	Rules              json.RawMessage `json:"rules,omitempty"`
	HTTPSPorts         []int           `json:"httpsPorts,omitempty"`
	DNSServers         []string        `json:"dnsServers,omitempty"`
	// AllowInternetAccess is only in the update body (snake case there).
	AllowInternetAccess *bool `json:"allow_internet_access,omitempty"`
}

// e2bCreate is POST /sandboxes and /v2/sandboxes.
type e2bCreate struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int              `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Network             *e2bNetwork       `json:"network"`
	AutoPause           *bool             `json:"autoPause"`
	AutoPauseMemory     *bool             `json:"autoPauseMemory"`
	// AutoResume is {"enabled": bool} (2.x SDKs) or a bare bool (older).
	AutoResume   json.RawMessage `json:"autoResume"`
	Secure       *bool           `json:"secure"`
	MCP          json.RawMessage `json:"mcp"`
	IAM          json.RawMessage `json:"iam"`
	VolumeMounts json.RawMessage `json:"volumeMounts"`
}

// e2bSandbox answers create, connect and each fork.
type e2bSandbox struct {
	TemplateID         string  `json:"templateID"`
	SandboxID          string  `json:"sandboxID"`
	Alias              string  `json:"alias,omitempty"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	EnvdAccessToken    string  `json:"envdAccessToken,omitempty"`
	TrafficAccessToken *string `json:"trafficAccessToken"`
	Domain             *string `json:"domain"`
}

// e2bLifecycle is a sandbox's timeout behaviour.
type e2bLifecycle struct {
	AutoResume bool   `json:"autoResume"`
	OnTimeout  string `json:"onTimeout"`
}

// e2bDetail answers GET /sandboxes/{id} and is each listed sandbox.
type e2bDetail struct {
	TemplateID          string            `json:"templateID"`
	SandboxID           string            `json:"sandboxID"`
	Alias               string            `json:"alias,omitempty"`
	ClientID            string            `json:"clientID"`
	StartedAt           time.Time         `json:"startedAt"`
	EndAt               time.Time         `json:"endAt"`
	EnvdVersion         string            `json:"envdVersion"`
	CPUCount            int               `json:"cpuCount"`
	MemoryMB            int               `json:"memoryMB"`
	DiskSizeMB          int               `json:"diskSizeMB"`
	State               string            `json:"state"`
	Metadata            map[string]string `json:"metadata"`
	EnvdAccessToken     string            `json:"envdAccessToken,omitempty"`
	AllowInternetAccess *bool             `json:"allowInternetAccess,omitempty"`
	Domain              *string           `json:"domain,omitempty"`
	Network             *e2bNetwork       `json:"network,omitempty"`
	Lifecycle           *e2bLifecycle     `json:"lifecycle,omitempty"`
	PauseMode           string            `json:"pauseMode,omitempty"`
}

// e2bMetric is one sample of GET /sandboxes/{id}/metrics.
type e2bMetric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       int64     `json:"memUsed"`
	MemTotal      int64     `json:"memTotal"`
	MemCache      int64     `json:"memCache"`
	DiskUsed      int64     `json:"diskUsed"`
	DiskTotal     int64     `json:"diskTotal"`
}

// e2bSnapshot is a named snapshot (a Wrenn snapshot template).
type e2bSnapshot struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

// e2bForkResult is one requested fork: the sandbox or why it failed.
type e2bForkResult struct {
	Sandbox *e2bSandbox `json:"sandbox,omitempty"`
	Error   *e2bError   `json:"error,omitempty"`
}
