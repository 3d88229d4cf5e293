package hostreg_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"github.com/wrenn/wrenn/internal/clocktest"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRegisterIssuesHostIdentity(t *testing.T) {
	for _, tc := range []struct {
		name, address string
		wantIP        net.IP
		wantDNS       string
	}{
		{name: "ip", address: "127.0.0.1:50051", wantIP: net.ParseIP("127.0.0.1")},
		{name: "ipv6", address: "[::1]:50051", wantIP: net.ParseIP("::1")},
		{name: "dns", address: "agent-1.example.internal:50051", wantDNS: "agent-1.example.internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			id, tok := e.newHost(t)
			resp := e.register(t, tok, tc.address)

			if resp.HostId != id.String() {
				t.Errorf("host_id = %s, want %s", resp.HostId, id)
			}
			if !wellFormedCredential(resp.HostToken) {
				t.Errorf("host_token %q: want wrh_ + 64 hex", resp.HostToken)
			}
			if got, want := time.UnixMilli(resp.HostTokenExpiresAtUnixMs), e.clk.Now().Add(hostreg.CredentialTTL); !got.Equal(want) {
				t.Errorf("credential expires %v, want %v", got, want)
			}
			caCert := parseCert(t, resp.CaPem)
			if !caCert.Equal(e.ca.Certificate()) {
				t.Error("ca_pem is not the cluster CA")
			}
			cert := parseCert(t, resp.CertificatePem)
			roots := x509.NewCertPool()
			roots.AddCert(caCert)
			opts := x509.VerifyOptions{Roots: roots, CurrentTime: e.clk.Now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if tc.wantIP != nil {
				opts.DNSName = tc.wantIP.String()
			} else {
				opts.DNSName = tc.wantDNS
			}
			if _, err := cert.Verify(opts); err != nil {
				t.Fatalf("certificate does not verify for %s: %v", opts.DNSName, err)
			}
			clientOpts := opts
			clientOpts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			if _, err := cert.Verify(clientOpts); err == nil {
				t.Error("host certificate is also valid for client auth")
			}
			if cert.Subject.CommonName != id.String() {
				t.Errorf("CN = %q, want host id %s", cert.Subject.CommonName, id)
			}
			if slices.Contains(cert.DNSNames, "evil.example") {
				t.Error("names from the CSR were copied into the certificate")
			}
			if got, want := cert.NotAfter, e.clk.Now().Add(hostreg.ServerCertTTL); !got.Equal(want.Truncate(time.Second)) {
				t.Errorf("NotAfter = %v, want %v", got, want)
			}

			h, err := e.q.GetTeamHost(context.Background(), store.GetTeamHostParams{ID: id, TeamID: e.teamID})
			if err != nil {
				t.Fatal(err)
			}
			if h.Host.Status != "online" || h.Host.Address != tc.address || h.Host.Cpus != 8 || h.Host.Vmm != "qemu" {
				t.Errorf("host row after register = %+v", h.Host)
			}
			if h.Host.RegistrationTokenHash != nil || h.Host.RegistrationExpiresAt != nil {
				t.Error("registration token not consumed")
			}
			if h.Host.LastHeartbeatAt == nil || !h.Host.LastHeartbeatAt.Equal(e.clk.Now()) {
				t.Errorf("last_heartbeat_at = %v, want %v", h.Host.LastHeartbeatAt, e.clk.Now())
			}
			if _, err := e.heartbeat(resp.HostToken, &hostagentv1.HeartbeatRequest{}); err != nil {
				t.Errorf("heartbeat with the new credential: %v", err)
			}
		})
	}
}

func wellFormedCredential(s string) bool {
	if len(s) != 4+64 || s[:4] != "wrh_" {
		return false
	}
	for _, c := range s[4:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func TestRegisterRefusesBadTokens(t *testing.T) {
	e := newEnv(t)
	_, used := e.newHost(t)
	e.register(t, used, "127.0.0.1:50051")
	_, expired := e.newHost(t)
	unknown, _ := hostreg.NewRegistrationToken()

	deletedID, deleted := e.newHost(t)
	if _, err := e.pool.Exec(context.Background(), "UPDATE hosts SET status = 'deleted' WHERE id = $1", deletedID); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(hostreg.RegistrationTokenTTL) // expires exactly now: refused

	for _, tc := range []struct{ name, tok string }{
		{"used", used}, {"expired", expired}, {"unknown", unknown}, {"deleted host", deleted},
		{"malformed", "wrr_nothex"}, {"empty", ""}, {"credential instead", "wrh_" + unknown[4:] + unknown[4:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, _ := newCSR(t)
			_, err := e.client.Register(context.Background(), connect.NewRequest(&hostagentv1.RegisterRequest{
				RegistrationToken: tc.tok, Address: "127.0.0.1:50052", Specs: specs(), CsrPem: csr,
			}))
			wantCode(t, err, connect.CodeUnauthenticated)
		})
	}
}

func TestRegisterRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newHost(t)
	good, _ := newCSR(t)
	tampered := func() []byte {
		blk, _ := pem.Decode(good)
		der := slices.Clone(blk.Bytes)
		der[len(der)-5] ^= 0xff // inside the signature
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	for _, tc := range []struct {
		name    string
		address string
		csr     []byte
		specs   *hostagentv1.HostSpecs
	}{
		{name: "no address", address: "", csr: good, specs: specs()},
		{name: "no port", address: "127.0.0.1", csr: good, specs: specs()},
		{name: "port zero", address: "127.0.0.1:0", csr: good, specs: specs()},
		{name: "unspecified ip", address: "0.0.0.0:50051", csr: good, specs: specs()},
		{name: "bad hostname", address: "a_b!:50051", csr: good, specs: specs()},
		{name: "no csr", address: "127.0.0.1:50051", specs: specs()},
		{name: "not pem", address: "127.0.0.1:50051", csr: []byte("hello"), specs: specs()},
		{name: "tampered csr", address: "127.0.0.1:50051", csr: tampered, specs: specs()},
		{name: "no specs", address: "127.0.0.1:50051", csr: good},
		{name: "negative cpus", address: "127.0.0.1:50051", csr: good, specs: &hostagentv1.HostSpecs{Cpus: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.Register(context.Background(), connect.NewRequest(&hostagentv1.RegisterRequest{
				RegistrationToken: tok, Address: tc.address, Specs: tc.specs, CsrPem: tc.csr,
			}))
			wantCode(t, err, connect.CodeInvalidArgument)
		})
	}
	// None of the refusals consumed the token.
	e.register(t, tok, "127.0.0.1:50051")
}

func TestRegisterTokenIsUsedOnce(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newHost(t)
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			csr, _ := newCSR(t)
			_, err := e.client.Register(context.Background(), connect.NewRequest(&hostagentv1.RegisterRequest{
				RegistrationToken: tok, Address: "127.0.0.1:50051", Specs: specs(), CsrPem: csr,
			}))
			mu.Lock()
			defer mu.Unlock()
			switch connect.CodeOf(err) {
			case connect.CodeUnauthenticated:
			case connect.CodeUnknown: // err == nil
				wins++
			default:
				t.Errorf("register: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d of %d concurrent registrations with one token succeeded, want 1", wins, n)
	}
}

func TestHeartbeatAuthentication(t *testing.T) {
	e := newEnv(t)
	id, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	other, _ := hostreg.NewCredential()

	for _, tc := range []struct{ name, header string }{
		{"no header", ""},
		{"unknown credential", "Bearer " + other},
		{"registration token", "Bearer " + tok},
		{"not bearer", "Basic " + cred},
		{"malformed", "Bearer wrh_xyz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := connect.NewRequest(&hostagentv1.HeartbeatRequest{})
			if tc.header != "" {
				req.Header().Set("Authorization", tc.header)
			}
			_, err := e.client.Heartbeat(context.Background(), req)
			wantCode(t, err, connect.CodeUnauthenticated)
		})
	}

	t.Run("expired credential", func(t *testing.T) {
		e.clk.Advance(hostreg.CredentialTTL)
		defer e.clk.Advance(-hostreg.CredentialTTL)
		_, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{})
		wantCode(t, err, connect.CodeUnauthenticated)
	})

	t.Run("deleted host", func(t *testing.T) {
		if _, err := e.pool.Exec(context.Background(), "UPDATE hosts SET status = 'deleted' WHERE id = $1", id); err != nil {
			t.Fatal(err)
		}
		_, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{})
		wantCode(t, err, connect.CodeNotFound)
		if ce := new(connect.Error); !asConnect(err, &ce) || ce.Message() != "host deleted" {
			t.Errorf("message: %v, want host deleted", err)
		}
		csr, _ := newCSR(t)
		req := connect.NewRequest(&hostagentv1.RenewRequest{CsrPem: csr})
		req.Header().Set("Authorization", "Bearer "+cred)
		_, err = e.client.Renew(context.Background(), req)
		wantCode(t, err, connect.CodeNotFound)
	})
}

func asConnect(err error, target **connect.Error) bool {
	ce, ok := err.(*connect.Error)
	if ok {
		*target = ce
	}
	return ok
}

func TestHeartbeatRecordsSpecsUsageTemplates(t *testing.T) {
	e := newEnv(t)
	id, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	e.clk.Advance(30 * time.Second)

	sp := specs()
	sp.AgentVersion = "v2"
	resp, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		Specs: sp,
		Usage: &hostagentv1.HostUsage{ReservedVcpus: 3, ReservedMemoryBytes: 3 << 30, ReservedDiskBytes: 5 << 30,
			MemoryAvailableBytes: 9 << 30, DiskAvailableBytes: 50 << 30, Load1: 0.5,
			GuestMemoryBytes: 8 << 30, GuestMemoryAvailableBytes: 7 << 30, SandboxDiskUsedBytes: 2 << 30},
		Templates: []*hostagentv1.Template{{Name: "minimal"}, {Name: "py", Snapshot: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.q.GetTeamHost(context.Background(), store.GetTeamHostParams{ID: id, TeamID: e.teamID})
	if err != nil {
		t.Fatal(err)
	}
	got := h.Host
	if got.LastHeartbeatAt == nil || !got.LastHeartbeatAt.Equal(e.clk.Now()) {
		t.Errorf("last_heartbeat_at = %v, want %v", got.LastHeartbeatAt, e.clk.Now())
	}
	if got.AgentVersion != "v2" || got.ReservedVcpus != 3 || got.MemoryAvailableBytes != 9<<30 || got.Load1 != 0.5 ||
		got.GuestMemoryBytes != 8<<30 || got.GuestMemoryAvailableBytes != 7<<30 || got.SandboxDiskUsedBytes != 2<<30 {
		t.Errorf("host after heartbeat = %+v", got)
	}
	if !slices.Equal(got.Templates, []string{"minimal", "py"}) || !slices.Equal(got.SnapshotTemplates, []string{"py"}) {
		t.Errorf("templates = %v, snapshot templates = %v", got.Templates, got.SnapshotTemplates)
	}
	// Registered 30 s ago: the certificate (30 d) reaches two thirds first.
	want := e.clk.Now().Add(-30 * time.Second).Add(hostreg.ServerCertTTL * 2 / 3)
	if got := time.UnixMilli(resp.RenewAfterUnixMs); !got.Equal(want) {
		t.Errorf("renew_after = %v, want %v", got, want)
	}

	// Without specs, the recorded ones stay.
	if _, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	h, _ = e.q.GetTeamHost(context.Background(), store.GetTeamHostParams{ID: id, TeamID: e.teamID})
	if h.Host.AgentVersion != "v2" || h.Host.Cpus != 8 {
		t.Errorf("specs lost by a heartbeat without them: %+v", h.Host)
	}
}

func TestRenewRotatesCredential(t *testing.T) {
	e := newEnv(t)
	id, tok := e.newHost(t)
	reg := e.register(t, tok, "10.0.0.7:50051")
	e.clk.Advance(20 * 24 * time.Hour)

	csr, _ := newCSR(t)
	req := connect.NewRequest(&hostagentv1.RenewRequest{CsrPem: csr})
	req.Header().Set("Authorization", "Bearer "+reg.HostToken)
	resp, err := e.client.Renew(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Msg
	if r.HostToken == reg.HostToken || !wellFormedCredential(r.HostToken) {
		t.Fatalf("renewed credential %q", r.HostToken)
	}
	if _, err := e.heartbeat(reg.HostToken, &hostagentv1.HeartbeatRequest{}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("old credential after renew: %v, want unauthenticated", err)
	}
	hb, err := e.heartbeat(r.HostToken, &hostagentv1.HeartbeatRequest{})
	if err != nil {
		t.Fatalf("new credential: %v", err)
	}
	if want := e.clk.Now().Add(hostreg.ServerCertTTL * 2 / 3); !time.UnixMilli(hb.RenewAfterUnixMs).Equal(want) {
		t.Errorf("renew_after = %v, want %v", time.UnixMilli(hb.RenewAfterUnixMs), want)
	}

	old, renewed := parseCert(t, reg.CertificatePem), parseCert(t, r.CertificatePem)
	if old.SerialNumber.Cmp(renewed.SerialNumber) == 0 {
		t.Error("renew returned the same certificate")
	}
	if _, err := renewed.Verify(x509.VerifyOptions{Roots: e.ca.Pool(), DNSName: "10.0.0.7", CurrentTime: e.clk.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
	if renewed.Subject.CommonName != id.String() || !renewed.NotAfter.Equal(e.clk.Now().Add(hostreg.ServerCertTTL).Truncate(time.Second)) {
		t.Errorf("renewed certificate CN %q NotAfter %v", renewed.Subject.CommonName, renewed.NotAfter)
	}

	// The old credential cannot renew either.
	req = connect.NewRequest(&hostagentv1.RenewRequest{CsrPem: csr})
	req.Header().Set("Authorization", "Bearer "+reg.HostToken)
	_, err = e.client.Renew(context.Background(), req)
	wantCode(t, err, connect.CodeUnauthenticated)
}

func TestHeartbeatReconcilesSandboxes(t *testing.T) {
	e := newEnv(t)
	id, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	otherID, otherTok := e.newHost(t)
	e.register(t, otherTok, "127.0.0.1:50052")
	now := e.clk.Now()
	old := now.Add(-time.Hour)

	for _, s := range []struct {
		id, state string
		host      uuid.UUID
		created   time.Time
	}{
		{"missing-present", "missing", id, old},
		{"missing-absent", "missing", id, old},
		{"running-present", "running", id, old},
		{"running-absent", "running", id, old},
		{"running-absent-new", "running", id, now.Add(-hostreg.VanishGrace / 2)},
		{"starting-absent", "starting", id, old},
		{"paused-absent", "paused", id, old},
		{"other-host-running", "running", otherID, old},
		{"stopped-present", "stopped", id, old},
	} {
		e.addSandbox(t, s.id, s.host, s.state, s.created)
	}
	if _, err := e.pool.Exec(context.Background(), "UPDATE hosts SET status = 'unreachable' WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	// Stopped an hour ago (past hostreg.OrphanGrace).
	if _, err := e.pool.Exec(context.Background(), "UPDATE sandboxes SET updated_at = $1 WHERE id = 'stopped-present'", old); err != nil {
		t.Fatal(err)
	}

	resp, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		SandboxIds: []string{"missing-present", "running-present", "stopped-present", "stray"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.hostStatus(t, id); got != "online" {
		t.Errorf("host status %s after heartbeat, want online", got)
	}
	for id, want := range map[string]string{
		"missing-present":    "running",
		"missing-absent":     "stopped",
		"running-present":    "running",
		"running-absent":     "stopped",
		"running-absent-new": "running", // its create may still be finishing
		"starting-absent":    "starting",
		"paused-absent":      "stopped", // its host no longer holds it
		"other-host-running": "running",
		"stopped-present":    "stopped",
	} {
		if got := e.sandboxState(t, id); got != want {
			t.Errorf("sandbox %s: %s, want %s", id, got, want)
		}
	}
	var stoppedAt *time.Time
	if err := e.pool.QueryRow(context.Background(), "SELECT stopped_at FROM sandboxes WHERE id = 'missing-absent'").Scan(&stoppedAt); err != nil {
		t.Fatal(err)
	}
	if stoppedAt == nil || !stoppedAt.Equal(e.clk.Now()) {
		t.Errorf("stopped_at = %v, want %v", stoppedAt, e.clk.Now())
	}
	// The host still holds a sandbox whose row is stopped: it is told to
	// destroy it. One the database has no record of is only logged.
	if got := resp.GetDestroySandboxIds(); !slices.Equal(got, []string{"stopped-present"}) {
		t.Errorf("destroy_sandbox_ids = %v, want [stopped-present]", got)
	}
	v, ok := e.logs.attr("host holds sandboxes the database does not place on it", "sandbox_ids")
	if !ok {
		t.Fatal("strays not logged")
	}
	if got, _ := v.Any().([]string); !slices.Equal(got, []string{"stray"}) {
		t.Errorf("strays logged: %v", v)
	}
	if !e.logs.has("host back online") {
		t.Error("return to online not logged")
	}
}

func (l *logRecorder) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Message == msg {
			return true
		}
	}
	return false
}

func TestLoadOrCreateCAIsShared(t *testing.T) {
	e := newEnv(t) // created the CA
	again, err := hostreg.LoadOrCreateCA(context.Background(), e.q, e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !again.Certificate().Equal(e.ca.Certificate()) {
		t.Fatal("a second replica got a different CA")
	}
	c := e.ca.Certificate()
	if !c.IsCA || c.NotAfter.Sub(c.NotBefore) < hostreg.CAValidity {
		t.Errorf("CA IsCA=%v validity %v", c.IsCA, c.NotAfter.Sub(c.NotBefore))
	}
}

func TestClientIdentity(t *testing.T) {
	clk := clocktest.New(time.Now())
	ca, err := hostreg.NewCA(clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := hostreg.NewClientIdentity(ca, clk)
	first, err := id.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if leaf.Subject.CommonName != hostreg.ControlPlaneCN {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: clk.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify for client auth: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: clk.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate also valid for server auth")
	}
	same, _ := id.Certificate()
	if same != first {
		t.Error("certificate re-issued before it was due")
	}
	clk.Advance(hostreg.ClientCertTTL * 2 / 3)
	next, _ := id.Certificate()
	if next == first || !next.Leaf.NotAfter.After(leaf.NotAfter) {
		t.Error("certificate not re-issued after two thirds of its life")
	}
}

// TestHeartbeatOrphans: a heartbeat tells the host to destroy what it
// still runs of sandboxes whose rows say they are gone (stopped, or in
// error while the host reports them alive: a create or fork given up),
// once they have been so for hostreg.OrphanGrace; never a sandbox in
// error that the host reports in error too (kept for its logs until
// deleted), one just stopped, one still starting, or one without a row.
func TestHeartbeatOrphans(t *testing.T) {
	e := newEnv(t)
	id, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	now := e.clk.Now()
	old := now.Add(-time.Hour)
	for _, s := range []struct {
		id, state string
		updated   time.Time
	}{
		{"stopped-old", "stopped", old},
		{"stopped-just-now", "stopped", now.Add(-hostreg.OrphanGrace / 2)},
		{"abandoned-running-on-host", "error", old},
		{"failed-on-host-too", "error", old},
		{"starting", "starting", old},
		{"running", "running", old},
	} {
		e.addSandbox(t, s.id, id, s.state, old)
		if _, err := e.pool.Exec(context.Background(), "UPDATE sandboxes SET updated_at = $1 WHERE id = $2", s.updated, s.id); err != nil {
			t.Fatal(err)
		}
	}
	running := hostagentv1.SandboxState_SANDBOX_STATE_RUNNING
	resp, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		SandboxIds: []string{"stopped-old", "stopped-just-now", "abandoned-running-on-host", "failed-on-host-too", "starting", "running", "no-row"},
		SandboxStates: map[string]hostagentv1.SandboxState{
			"stopped-old": running, "stopped-just-now": running, "abandoned-running-on-host": running,
			"failed-on-host-too": hostagentv1.SandboxState_SANDBOX_STATE_ERROR,
			"starting":           hostagentv1.SandboxState_SANDBOX_STATE_STARTING, "running": running, "no-row": running,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetDestroySandboxIds(), []string{"abandoned-running-on-host", "stopped-old"}; !slices.Equal(got, want) {
		t.Errorf("destroy_sandbox_ids = %v, want %v", got, want)
	}
	for id, want := range map[string]string{"stopped-old": "stopped", "abandoned-running-on-host": "error", "failed-on-host-too": "error", "running": "running"} {
		if got := e.sandboxState(t, id); got != want {
			t.Errorf("sandbox %s: %s, want %s (told to destroy, the row stays as it is)", id, got, want)
		}
	}
}
