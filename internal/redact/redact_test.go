package redact

import "testing"

// What each way of showing a URL hides, and what it keeps.
func TestRedaction(t *testing.T) {
	ways := map[string]func(string) string{"URL": URL, "NATSURLs": NATSURLs, "Userinfo": Userinfo}
	for _, c := range []struct{ way, in, want string }{
		{"URL", "", ""},
		{"URL", "smtp://mailer:pw@mail.example:587", "smtp://mailer:xxxxx@mail.example:587"},
		{"URL", "postgres://app:pw@db:5432/authd?sslpassword=pw&sslmode=require", "postgres://app:xxxxx@db:5432/authd?sslmode=require&sslpassword=xxxxx"},
		{"URL", "postgres://app@db/authd?Password=pw", "postgres://app@db/authd?Password=xxxxx"},
		{"URL", "smtp://mail.example", "smtp://mail.example"},
		{"URL", "host=db password=pw dbname=authd", "(set, not shown)"},
		{"URL", "smtp://u:pw%zz@mail.example", "(set, not shown)"},

		{"NATSURLs", "", ""},
		{"NATSURLs", "nats://svc:pw@n1:4222,nats://n2:4222, nats://token@n3:4222", "nats://svc:xxxxx@n1:4222,nats://n2:4222,nats://xxxxx@n3:4222"},
		{"NATSURLs", "nats://n1:4222,,nats://n2:4222", "nats://n1:4222,nats://n2:4222"},
		{"NATSURLs", "nats://tok%zz@n1:4222", "(set, not shown)"},

		{"Userinfo", "smtp://u:pw%zz@mail.example", "smtp://u:xxxxx@mail.example"},
		{"Userinfo", "smtp://pw%zz@mail.example", "smtp://xxxxx@mail.example"},
		{"Userinfo", "u:pw@mail.example:587", "u:xxxxx@mail.example:587"},
		{"Userinfo", "nats://a:b@c:pw@n1:4222/x@y", "nats://a:xxxxx@n1:4222/x@y"},
		{"Userinfo", "smtp://mail.example/inbox@local", "smtp://mail.example/inbox@local"},
		{"Userinfo", "mail.example:587", "mail.example:587"},
	} {
		if got := ways[c.way](c.in); got != c.want {
			t.Errorf("%s(%q) = %q, want %q", c.way, c.in, got, c.want)
		}
	}
}
