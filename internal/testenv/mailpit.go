package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"go/build"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const installMailpit = "install it with: go install github.com/axllent/mailpit@v1.33.1"

// MailpitServer is a Mailpit process of the test's own: an SMTP server that
// keeps every message it receives and shows them through its REST API.
type MailpitServer struct {
	smtpAddr    string
	httpURL     string
	implicitTLS bool
	rootCAs     *x509.CertPool
	client      *http.Client

	mu       sync.Mutex
	returned map[string]bool // message IDs WaitForMessage has handed out
}

// MailpitMessage is a message as Mailpit received it.
type MailpitMessage struct {
	ID       string
	From     string   // the address only
	To       []string // the addresses only
	Subject  string   // decoded
	Text     string   // the text/plain part, decoded
	HTML     string   // the text/html part, decoded
	Username string   // the user the client authenticated as; "" without SMTP AUTH
}

// MailpitOption changes how Mailpit is started.
type MailpitOption func(*mailpitConfig)

type mailpitConfig struct {
	starttls, implicitTLS bool
}

// MailpitSTARTTLS makes Mailpit require STARTTLS, with a certificate for
// 127.0.0.1 and localhost that only RootCAs trusts.
func MailpitSTARTTLS() MailpitOption {
	return func(c *mailpitConfig) { c.starttls, c.implicitTLS = true, false }
}

// MailpitImplicitTLS makes Mailpit's SMTP port speak TLS from the first byte
// (SMTPS), with a certificate that only RootCAs trusts; SMTPURL is then
// smtps://.
func MailpitImplicitTLS() MailpitOption {
	return func(c *mailpitConfig) { c.starttls, c.implicitTLS = false, true }
}

// Mailpit starts a Mailpit on free loopback ports and stops it when the test
// ends. It accepts any SMTP user and password (and none), so a URL with
// credentials exercises the client's AUTH. Without options SMTP is plain, as
// a loopback SMTP_URL may be.
func Mailpit(t testing.TB, opts ...MailpitOption) *MailpitServer {
	t.Helper()
	var cfg mailpitConfig
	for _, o := range opts {
		o(&cfg)
	}
	bin := mailpitBinary(t)
	dir := t.TempDir()

	args := []string{
		"--disable-version-check", // it asks GitHub for the latest release otherwise
		"--smtp-disable-rdns",     // a reverse lookup per connection, which can hang without DNS
		"--max", "0",              // it prunes beyond 500 messages by default
		"--smtp-auth-accept-any",
	}
	m := &MailpitServer{
		implicitTLS: cfg.implicitTLS,
		client:      &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second},
		returned:    map[string]bool{},
	}
	if cfg.starttls || cfg.implicitTLS {
		certFile, keyFile, pool := selfSignedCert(t, dir)
		m.rootCAs = pool
		args = append(args, "--smtp-tls-cert", certFile, "--smtp-tls-key", keyFile)
		if cfg.implicitTLS {
			args = append(args, "--smtp-require-tls")
		} else {
			args = append(args, "--smtp-require-starttls")
		}
	} else {
		// Mailpit refuses AUTH over plain SMTP without this.
		args = append(args, "--smtp-auth-allow-insecure")
	}

	// The ports are free when picked but may be taken before Mailpit binds
	// them; another pair then does.
	for attempt := 1; ; attempt++ {
		smtpAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		httpAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		db := filepath.Join(dir, fmt.Sprintf("mailpit-%d.db", attempt))
		all := append(slices.Clip(args), "--smtp", smtpAddr, "--listen", httpAddr, "--database", db)
		log, err := m.start(t, bin, all, smtpAddr, httpAddr)
		if err == nil {
			m.smtpAddr, m.httpURL = smtpAddr, "http://"+httpAddr
			return m
		}
		if attempt < 3 && strings.Contains(log, "address already in use") {
			continue
		}
		t.Fatalf("start Mailpit (%s %s): %v\nits output:\n%s", bin, strings.Join(all, " "), err, log)
	}
}

// start runs Mailpit and waits until both its HTTP API and its SMTP port
// answer. On failure it returns Mailpit's output so far.
func (m *MailpitServer) start(t testing.TB, bin string, args []string, smtpAddr, httpAddr string) (string, error) {
	t.Helper()
	out := &SyncBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Env = mailpitEnv()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	// /readyz turns true just before the HTTP server listens, and the SMTP
	// server starts on its own goroutine, so both are probed.
	ready := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		if err != nil {
			return false
		}
		resp, err := m.client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		c, err := net.DialTimeout("tcp", smtpAddr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	deadline := time.Now().Add(15 * time.Second)
	for !ready() {
		select {
		case err := <-exited:
			return out.String(), fmt.Errorf("exited before it was ready: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return out.String(), errors.New("not ready after 15 s")
		}
	}
	t.Cleanup(func() {
		stop()
		m.client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("Mailpit's output:\n%s", out.String())
		}
	})
	return "", nil
}

// mailpitBinary finds mailpit on PATH or where go install puts it, which is
// often not on PATH.
func mailpitBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	for _, gopath := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gopath, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "mailpit")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("mailpit is not on PATH nor in %s; %s", strings.Join(dirs, ", "), installMailpit)
	return ""
}

// mailpitEnv drops Mailpit's MP_* settings, which would otherwise override
// the defaults these tests rely on (a developer's MP_SMTP_AUTH, say).
func mailpitEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MP_") })
}

// SMTPURL is where to send: smtp://127.0.0.1:PORT, or smtps:// with
// MailpitImplicitTLS. It has no credentials; any may be added.
func (m *MailpitServer) SMTPURL() string {
	if m.implicitTLS {
		return "smtps://" + m.smtpAddr
	}
	return "smtp://" + m.smtpAddr
}

// HTTPURL is the base of Mailpit's web UI and REST API (/api/v1/...).
func (m *MailpitServer) HTTPURL() string { return m.httpURL }

// RootCAs trusts Mailpit's certificate; it is nil when Mailpit has no TLS.
func (m *MailpitServer) RootCAs() *x509.CertPool { return m.rootCAs }

type mailpitAddress struct {
	Name, Address string
}

type mailpitSummary struct {
	ID          string
	To, Cc, Bcc []mailpitAddress
}

// summaries lists Mailpit's messages newest first, a page at a time, until
// each returns false.
func (m *MailpitServer) summaries(t testing.TB, each func(mailpitSummary) bool) {
	t.Helper()
	const page = 100
	for start := 0; ; start += page {
		var res struct {
			Messages []mailpitSummary `json:"messages"`
		}
		m.getJSON(t, fmt.Sprintf("/api/v1/messages?start=%d&limit=%d", start, page), &res)
		for _, s := range res.Messages {
			if !each(s) {
				return
			}
		}
		if len(res.Messages) < page {
			return
		}
	}
}

// Messages returns every message Mailpit holds, newest first, with bodies.
func (m *MailpitServer) Messages(t testing.TB) []MailpitMessage {
	t.Helper()
	var ids []string
	m.summaries(t, func(s mailpitSummary) bool {
		ids = append(ids, s.ID)
		return true
	})
	msgs := make([]MailpitMessage, len(ids))
	for i, id := range ids {
		msgs[i] = m.Message(t, id)
	}
	return msgs
}

// Message returns one message, with its decoded text and HTML bodies.
func (m *MailpitServer) Message(t testing.TB, id string) MailpitMessage {
	t.Helper()
	var res struct {
		ID       string
		From     *mailpitAddress
		To       []mailpitAddress
		Subject  string
		Text     string
		HTML     string
		Username string
	}
	m.getJSON(t, "/api/v1/message/"+url.PathEscape(id), &res)
	msg := MailpitMessage{ID: res.ID, Subject: res.Subject, Text: res.Text, HTML: res.HTML, Username: res.Username}
	if res.From != nil {
		msg.From = res.From.Address
	}
	for _, a := range res.To {
		msg.To = append(msg.To, a.Address)
	}
	return msg
}

// Headers returns a message's headers as received, values still encoded.
func (m *MailpitServer) Headers(t testing.TB, id string) map[string][]string {
	t.Helper()
	var h map[string][]string
	m.getJSON(t, "/api/v1/message/"+url.PathEscape(id)+"/headers", &h)
	return h
}

// WaitForMessage waits until Mailpit holds a message to the address to (To,
// Cc or Bcc, case-insensitively) that no earlier WaitForMessage returned,
// and returns the newest such. So a test that asks for a second code waits
// for the second email instead of reading the first one again.
func (m *MailpitServer) WaitForMessage(t testing.TB, to string, timeout time.Duration) MailpitMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if id := m.claimNewest(t, to); id != "" {
			return m.Message(t, id)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new email to %s reached Mailpit within %v", to, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// claimNewest returns the newest message to the address that WaitForMessage
// has not returned yet, and marks it returned; "" when there is none.
func (m *MailpitServer) claimNewest(t testing.TB, to string) string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var found string
	m.summaries(t, func(s mailpitSummary) bool {
		if m.returned[s.ID] || !addressedTo(s, to) {
			return true
		}
		found = s.ID
		return false
	})
	if found != "" {
		m.returned[found] = true
	}
	return found
}

func addressedTo(s mailpitSummary, to string) bool {
	for _, list := range [][]mailpitAddress{s.To, s.Cc, s.Bcc} {
		for _, a := range list {
			if strings.EqualFold(a.Address, to) {
				return true
			}
		}
	}
	return false
}

func (m *MailpitServer) getJSON(t testing.TB, path string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.httpURL+path, nil)
	if err != nil {
		t.Fatalf("Mailpit GET %s: %v", path, err)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		t.Fatalf("Mailpit GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		t.Fatalf("Mailpit GET %s: read body: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Mailpit GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("Mailpit GET %s: decode: %v", path, err)
	}
}

var sixDigits = regexp.MustCompile(`\b[0-9]{6}\b`)

// CodeIn returns the one 6-digit code in m's text body, failing the test
// when there is none or more than one different.
func CodeIn(t testing.TB, m MailpitMessage) string {
	t.Helper()
	codes := slices.Compact(slices.Sorted(slices.Values(sixDigits.FindAllString(m.Text, -1))))
	if len(codes) != 1 {
		t.Fatalf("email %q to %v has %d different 6-digit codes in its text, want 1:\n%s", m.Subject, m.To, len(codes), m.Text)
	}
	return codes[0]
}

// selfSignedCert writes a certificate for 127.0.0.1, ::1 and localhost and
// its key into dir, and returns a pool that trusts it.
func selfSignedCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate Mailpit TLS key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("generate Mailpit certificate serial: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "authd test Mailpit"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create Mailpit certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse Mailpit certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal Mailpit TLS key: %v", err)
	}
	certFile, keyFile = filepath.Join(dir, "smtp-cert.pem"), filepath.Join(dir, "smtp-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatalf("write Mailpit certificate: %v", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatalf("write Mailpit TLS key: %v", err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// SyncBuffer collects what a process or a running component writes (exec's
// copying goroutines, a logger) while the test may read it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
