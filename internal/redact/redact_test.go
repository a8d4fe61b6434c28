package redact

import "testing"

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                  "",
		"smtp://mailer:pw@mail.example:587": "smtp://mailer:xxxxx@mail.example:587",
		"postgres://app:pw@db:5432/authd?sslpassword=pw&sslmode=require": "postgres://app:xxxxx@db:5432/authd?sslmode=require&sslpassword=xxxxx",
		"postgres://app@db/authd?Password=pw":                            "postgres://app@db/authd?Password=xxxxx",
		"smtp://mail.example":                                            "smtp://mail.example",
		"host=db password=pw dbname=authd":                               "(set, not shown)",
		"smtp://u:pw%zz@mail.example":                                    "(set, not shown)",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNATSURLs(t *testing.T) {
	for in, want := range map[string]string{
		"": "",
		"nats://svc:pw@n1:4222,nats://n2:4222, nats://token@n3:4222": "nats://svc:xxxxx@n1:4222,nats://n2:4222,nats://xxxxx@n3:4222",
		"nats://n1:4222,,nats://n2:4222":                             "nats://n1:4222,nats://n2:4222",
		"nats://tok%zz@n1:4222":                                      "(set, not shown)",
	} {
		if got := NATSURLs(in); got != want {
			t.Errorf("NATSURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUserinfo(t *testing.T) {
	for in, want := range map[string]string{
		"smtp://u:pw%zz@mail.example":     "smtp://u:xxxxx@mail.example",
		"smtp://pw%zz@mail.example":       "smtp://xxxxx@mail.example",
		"u:pw@mail.example:587":           "u:xxxxx@mail.example:587",
		"nats://a:b@c:pw@n1:4222/x@y":     "nats://a:xxxxx@n1:4222/x@y",
		"smtp://mail.example/inbox@local": "smtp://mail.example/inbox@local",
		"mail.example:587":                "mail.example:587",
	} {
		if got := Userinfo(in); got != want {
			t.Errorf("Userinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
