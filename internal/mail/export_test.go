package mail

import "crypto/x509"

// SetRootCAs makes s trust a test server's self-signed certificate; authd
// itself always uses the system's roots.
func SetRootCAs(s *SMTP, pool *x509.CertPool) { s.tlsConfig.RootCAs = pool }

// Purposes and NoticeEvents list every mail, so that a test can render each.
func Purposes() []Purpose    { return purposes() }
func NoticeEvents() []string { return noticeEvents() }
