package registration

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// Files under WRENN_DIR. All are written whole under a temporary name,
// fsynced and renamed into place, mode 0600.
const (
	// KeyFile is the agent's ECDSA P-256 private key (PKCS#8 PEM). It
	// never leaves the host.
	KeyFile = "host.key"
	// CertFile is the agent's serving certificate, signed by the control
	// plane's CA.
	CertFile = "host.crt"
	// CAFile is the control plane's CA: the agent admits clients it signed.
	CAFile = "ca.crt"
	// TokenFile is the long-lived host credential heartbeats carry.
	TokenFile = "host-token"
	// HostIDFile is the host's id at the control plane.
	HostIDFile = "host-id"
	// StateFile records what the agent registered with (address, control
	// plane URL) and when its token expires, so later starts need no flags.
	StateFile = "registration.json"
)

// files lists every credential file in the order Save writes them. The
// token comes first: the control plane may retire the old token as soon as
// it issues a new one, so after a crash midway a new token beside the old,
// still valid certificate is recoverable (the next heartbeat renews again),
// while the reverse would lock the host out.
var files = []string{TokenFile, StateFile, HostIDFile, KeyFile, CertFile, CAFile}

// Credentials are what registration yields and renewal refreshes.
type Credentials struct {
	HostID         string
	Token          string
	TokenExpiresAt time.Time
	KeyPEM         []byte
	CertPEM        []byte
	CAPEM          []byte
	// Address is the host:port registered for the control plane to dial.
	Address string
	// CPURL is the control plane's base URL.
	CPURL string
	// RegisteredWith is the SHA-256 (hex) of the one-time registration
	// token these credentials came from: a restart that passes the same
	// token again (left in a unit's environment file) uses them instead of
	// spending it twice.
	RegisteredWith string
}

// state is StateFile's content.
type state struct {
	Address               string `json:"address"`
	CPURL                 string `json:"cp_url"`
	TokenExpiresAtUnixMs  int64  `json:"host_token_expires_at_unix_ms,omitempty"`
	RegisteredAtUnixMs    int64  `json:"registered_at_unix_ms,omitempty"`
	CertificateNotAfterMs int64  `json:"certificate_not_after_unix_ms,omitempty"`
	RegisteredWith        string `json:"registered_with_token_sha256,omitempty"`
}

// Store keeps the credentials under one directory (WRENN_DIR).
type Store struct {
	dir string
}

// NewStore returns a Store over dir.
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the directory the credentials live in.
func (s *Store) Dir() string { return s.dir }

// Load reads the saved credentials. None saved is errdefs.ErrNotFound; a
// partial or inconsistent set is errdefs.ErrFailedPrecondition (register
// again).
func (s *Store) Load() (Credentials, error) {
	read := func(name string) ([]byte, error) {
		return os.ReadFile(filepath.Join(s.dir, name))
	}
	token, err := read(TokenFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Credentials{}, errdefs.New(errdefs.ErrNotFound, "no host credentials in %s: the agent is not registered", s.dir)
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("read %s: %w", TokenFile, errdefs.FromOS(err))
	}
	c := Credentials{Token: strings.TrimSpace(string(token))}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{KeyFile, &c.KeyPEM}, {CertFile, &c.CertPEM}, {CAFile, &c.CAPEM}} {
		if *f.dst, err = read(f.name); err != nil {
			return Credentials{}, incomplete(s.dir, f.name, err)
		}
	}
	id, err := read(HostIDFile)
	if err != nil {
		return Credentials{}, incomplete(s.dir, HostIDFile, err)
	}
	c.HostID = strings.TrimSpace(string(id))
	b, err := read(StateFile)
	if err != nil {
		return Credentials{}, incomplete(s.dir, StateFile, err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return Credentials{}, incomplete(s.dir, StateFile, err)
	}
	c.Address, c.CPURL, c.RegisteredWith = st.Address, st.CPURL, st.RegisteredWith
	if st.TokenExpiresAtUnixMs > 0 {
		c.TokenExpiresAt = time.UnixMilli(st.TokenExpiresAtUnixMs)
	}
	if c.Token == "" || c.HostID == "" || c.Address == "" || c.CPURL == "" {
		return Credentials{}, incomplete(s.dir, "", errors.New("token, host id, address or control plane URL is empty"))
	}
	if _, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		return Credentials{}, incomplete(s.dir, CertFile, err)
	}
	return c, nil
}

func incomplete(dir, name string, err error) error {
	return errdefs.New(errdefs.ErrFailedPrecondition,
		"host credentials in %s are incomplete or inconsistent (%s: %v): register again with --register", dir, name, err)
}

// Save writes every credential file atomically (each one whole or not at
// all), mode 0600.
func (s *Store) Save(c Credentials) error {
	st := state{Address: c.Address, CPURL: c.CPURL, RegisteredAtUnixMs: time.Now().UnixMilli(), RegisteredWith: c.RegisteredWith}
	if !c.TokenExpiresAt.IsZero() {
		st.TokenExpiresAtUnixMs = c.TokenExpiresAt.UnixMilli()
	}
	if cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM); err == nil && cert.Leaf != nil {
		st.CertificateNotAfterMs = cert.Leaf.NotAfter.UnixMilli()
	}
	stateJSON, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", StateFile, err)
	}
	content := map[string][]byte{
		KeyFile: c.KeyPEM, CertFile: c.CertPEM, CAFile: c.CAPEM,
		HostIDFile: []byte(c.HostID + "\n"), TokenFile: []byte(c.Token + "\n"), StateFile: append(stateJSON, '\n'),
	}
	for _, name := range files {
		if err := writeFile(filepath.Join(s.dir, name), content[name]); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(s.dir)
}

// Delete removes every credential file; absent ones are fine.
func (s *Store) Delete() error {
	var errs []error
	// Token first: without it the rest is not a usable identity.
	for _, name := range []string{TokenFile, StateFile, HostIDFile, CertFile, CAFile, KeyFile} {
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
		}
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// writeFile puts b at path atomically with mode 0600.
func writeFile(path string, b []byte) (err error) {
	tmp, err := atomicfile.TempName(path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, errdefs.FromOS(err))
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", path, errdefs.FromOS(err))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, errdefs.FromOS(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, errdefs.FromOS(err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s into place: %w", path, errdefs.FromOS(err))
	}
	return nil
}
