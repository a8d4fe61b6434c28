package main

import (
	"context"

	authhttp "github.com/authd/authd/http"
	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/notices"
)

// noticesConsumer is the consumer that mails security notices, with its
// readiness detail, or nil and none with AUTHD_NOTICES=off. Its failure
// degrades readiness only: requests are served the same without it, and its
// backlog is sent once it runs again.
func noticesConsumer(cfg config.Config, d notices.Deps) (*notices.Consumer, []authhttp.Check) {
	if !cfg.Notices {
		return nil, nil
	}
	c := notices.New(d, notices.Config{})
	return c, []authhttp.Check{{Name: "notices", Check: func(context.Context) error { return c.Err() }, Degrades: true}}
}
