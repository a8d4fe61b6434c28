package mail

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/authd/authd/internal/redact"
)

// ioTimeout bounds each SMTP command when ctx has no earlier deadline, so a
// server that accepts the connection and then stalls cannot hold a request.
const ioTimeout = 30 * time.Second

// SMTP sends messages to one SMTP server, one connection per message: authd
// sends few emails, and a fresh connection never finds a server-side idle
// timeout. It is safe for concurrent use.
type SMTP struct {
	host        string
	port        int
	user        string
	password    string
	hasAuth     bool
	implicitTLS bool             // smtps://: TLS from the first byte
	tlsPolicy   gomail.TLSPolicy // for smtp://: whether STARTTLS is required, tried or skipped
	plainAuthOK bool             // the password may cross a connection that is not encrypted
	tlsConfig   *tls.Config
	from        string
	fromDomain  string
}

// NewSMTP returns a Sender for rawURL, sending as from (an address, optionally
// with a display name: "Acme <no-reply@acme.example>").
//
// rawURL is one of
//
//	smtps://[user:password@]host[:port]   TLS from the first byte; port 465
//	smtp://[user:password@]host[:port]    STARTTLS; port 587
//
// An smtp:// URL requires STARTTLS, so that neither a code nor the password
// crosses the network in the clear, with two exceptions: to a loopback host
// (localhost, 127.0.0.0/8, ::1) STARTTLS is used when the server offers it
// and skipped otherwise, and ?tls=none never uses it, for a server on a
// trusted network that has no TLS (a Mailpit container, say). ?tls=starttls
// requires STARTTLS even to a loopback host. Credentials, when the URL has
// them, are sent with AUTH PLAIN or LOGIN, whichever the server offers. A
// password with URL-special characters must be percent-encoded.
func NewSMTP(rawURL, from string) (*SMTP, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	shown := redact.URL(rawURL)
	s := &SMTP{host: u.Hostname()}

	switch u.Scheme {
	case "smtp":
		s.port = 587
	case "smtps":
		s.port = 465
		s.implicitTLS = true
	default:
		return nil, fmt.Errorf("mail: SMTP URL %q: scheme must be smtp or smtps", shown)
	}
	if s.host == "" {
		return nil, fmt.Errorf("mail: SMTP URL %q names no host", shown)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("mail: SMTP URL %q: port %q is not a number from 1 to 65535", shown, p)
		}
		s.port = n
	}
	if u.Path != "" && u.Path != "/" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("mail: SMTP URL %q: only scheme, credentials, host, port and ?tls= are understood", shown)
	}
	if u.User != nil {
		s.user = u.User.Username()
		s.password, _ = u.User.Password()
		if s.user == "" {
			return nil, fmt.Errorf("mail: SMTP URL %q has a password but no user name", shown)
		}
		s.hasAuth = true
	}

	loopback := isLoopback(s.host)
	q := u.Query()
	for k := range q {
		if k != "tls" {
			return nil, fmt.Errorf("mail: SMTP URL %q: unknown parameter %q (only tls is understood)", shown, k)
		}
	}
	mode := q.Get("tls")
	switch {
	case s.implicitTLS && mode == "":
		s.tlsPolicy = gomail.NoTLS // the connection is TLS already; no STARTTLS on top
	case s.implicitTLS:
		return nil, fmt.Errorf("mail: SMTP URL %q: tls=%q does not apply to smtps, which is always TLS", shown, mode)
	case mode == "none":
		s.tlsPolicy = gomail.NoTLS
		s.plainAuthOK = true
	case mode == "starttls":
		s.tlsPolicy = gomail.TLSMandatory
	case mode == "" && loopback:
		s.tlsPolicy = gomail.TLSOpportunistic
		s.plainAuthOK = true
	case mode == "":
		s.tlsPolicy = gomail.TLSMandatory
	default:
		return nil, fmt.Errorf("mail: SMTP URL %q: tls=%q is not none or starttls", shown, mode)
	}
	s.tlsConfig = &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}

	addr, err := mail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("mail: sender address %q: %w", from, err)
	}
	s.from = addr.String()
	_, s.fromDomain, _ = strings.Cut(addr.Address, "@")
	return s, nil
}

// parseURL parses rawURL without ever quoting its password in an error:
// url.Parse quotes its whole input when it fails, and its cause can quote a
// bad %-escape from inside the password.
func parseURL(rawURL string) (*url.URL, error) {
	if !strings.Contains(rawURL, "://") {
		return nil, fmt.Errorf("mail: SMTP URL %q has no scheme: want smtp:// or smtps://", redact.Userinfo(rawURL))
	}
	u, err := url.Parse(rawURL)
	if err == nil {
		return u, nil
	}
	// Both the quote and the cause come from the masked form.
	masked := redact.Userinfo(rawURL)
	_, merr := url.Parse(masked)
	if merr == nil {
		return nil, fmt.Errorf("mail: SMTP URL %q: the password is not valid in a URL; percent-encode its special characters", masked)
	}
	var uerr *url.Error
	if errors.As(merr, &uerr) {
		merr = uerr.Err
	}
	return nil, fmt.Errorf("mail: SMTP URL %q is not a URL: %w", masked, merr)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// String shows where s sends, without the password.
func (s *SMTP) String() string {
	scheme := "smtp"
	if s.implicitTLS {
		scheme = "smtps"
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(s.host, strconv.Itoa(s.port))}
	if s.hasAuth {
		u.User = url.User(s.user)
	}
	return u.String()
}

// LogValue keeps the password out of a log line that logs s itself.
func (s *SMTP) LogValue() slog.Value { return slog.StringValue(s.String()) }

// GoString keeps the password out of %#v, which would print every field.
func (s *SMTP) GoString() string { return s.String() }

// Send delivers m, giving up when ctx ends, also midway through the SMTP
// conversation.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg, err := s.compose(m)
	if err != nil {
		return err
	}

	// go-mail reads ctx only while dialling and then bounds each command by
	// its own timeout; closing the connection when ctx ends is what stops a
	// Send that is already talking to a stalled server.
	var stops []func() bool
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	tlsConfig := s.tlsConfig.Clone()
	dial := func(dctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		stops = append(stops, context.AfterFunc(ctx, func() { conn.Close() }))
		if !s.implicitTLS {
			return conn, nil
		}
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(dctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	}

	opts := []gomail.Option{
		gomail.WithPort(s.port),
		gomail.WithTimeout(ioTimeout),
		gomail.WithDialContextFunc(dial),
		gomail.WithTLSPolicy(s.tlsPolicy),
		gomail.WithTLSConfig(tlsConfig),
		gomail.WithoutNoop(),
	}
	if s.hasAuth {
		// PLAIN and LOGIN are what SMTP servers offer; go-mail refuses them on
		// a connection that is not TLS unless told it may (the NOENC forms).
		mechs := []gomail.SMTPAuthType{gomail.SMTPAuthPlain, gomail.SMTPAuthLogin}
		if s.plainAuthOK {
			mechs = []gomail.SMTPAuthType{gomail.SMTPAuthPlainNoEnc, gomail.SMTPAuthLoginNoEnc}
		}
		opts = append(opts,
			gomail.WithOpportunisticSMTPAuth(mechs...),
			gomail.WithUsername(s.user),
			gomail.WithPassword(s.password),
		)
	}
	client, err := gomail.NewClient(s.host, opts...)
	if err != nil {
		return fmt.Errorf("mail: send via %s: %w", s, err)
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("mail: send via %s: %w (%v)", s, ctxErr, err)
		}
		return fmt.Errorf("mail: send via %s: %w", s, err)
	}
	return nil
}

// compose builds the MIME message: multipart/alternative when there is an
// HTML part, quoted-printable UTF-8 bodies, RFC 2047 encoded subject.
func (s *SMTP) compose(m Message) (*gomail.Msg, error) {
	if m.Text == "" {
		return nil, errors.New("mail: message has no text body")
	}
	// go-mail would fold a line break into the header; refusing it keeps a
	// subject built from user input from adding headers of its own.
	if strings.ContainsAny(m.Subject, "\r\n") {
		return nil, errors.New("mail: subject contains a line break")
	}
	if err := checkHeaders(m.Headers); err != nil {
		return nil, err
	}
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := msg.From(s.from); err != nil {
		return nil, fmt.Errorf("mail: sender %q: %w", s.from, err)
	}
	if err := msg.To(m.To); err != nil {
		return nil, fmt.Errorf("mail: recipient %q: %w", m.To, err)
	}
	msg.Subject(m.Subject)
	for name, value := range m.Headers {
		msg.SetGenHeader(gomail.Header(name), value)
	}
	msg.SetDate()
	id, err := messageID(s.fromDomain)
	if err != nil {
		return nil, err
	}
	msg.SetMessageIDWithValue(id)
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// messageID uses the sender's domain rather than go-mail's default (this
// machine's host name), which says nothing useful and is often a container id.
func messageID(domain string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("mail: message id: %w", err)
	}
	if domain == "" {
		domain = "localhost"
	}
	return hex.EncodeToString(b) + "@" + domain, nil
}
