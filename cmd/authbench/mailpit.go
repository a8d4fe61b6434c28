package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// mailpit reads the codes authd mails to the benchmark's users back through
// Mailpit's HTTP API (GET /api/v1/messages, GET /api/v1/message/{ID}). The
// authd under test must send to this Mailpit: SMTP_URL=smtp://<its SMTP port>.
type mailpit struct {
	base   string
	client *http.Client
}

type mailpitSummary struct {
	ID      string
	Created time.Time
	To      []struct{ Address string }
}

func (m *mailpit) getJSON(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("mailpit: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mailpit: GET %s: HTTP %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

var sixDigits = regexp.MustCompile(`\b[0-9]{6}\b`)

// codes waits until Mailpit holds a message to each of emails (lower case)
// and returns the 6-digit code of the newest one to each. Messages older
// than since are not looked at, so earlier runs' mail does not matter.
func (m *mailpit) codes(ctx context.Context, emails []string, since time.Time) (map[string]string, error) {
	want := make(map[string]bool, len(emails))
	for _, e := range emails {
		want[e] = true
	}
	found := map[string]string{} // email -> message id
	const page = 500
	for {
		// Newest first: page down until every address is found or the
		// messages are older than this run.
	pages:
		for start := 0; ; start += page {
			var res struct {
				Messages []mailpitSummary `json:"messages"`
			}
			if err := m.getJSON(ctx, fmt.Sprintf("/api/v1/messages?start=%d&limit=%d", start, page), &res); err != nil {
				return nil, err
			}
			for _, s := range res.Messages {
				if s.Created.Before(since) {
					break pages
				}
				for _, to := range s.To {
					a := strings.ToLower(to.Address)
					if _, seen := found[a]; want[a] && !seen {
						found[a] = s.ID
					}
				}
			}
			if len(res.Messages) < page || len(found) == len(want) {
				break
			}
		}
		if len(found) == len(want) {
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, fmt.Errorf("mailpit: %d of %d verification emails arrived (is authd's SMTP_URL this Mailpit's SMTP port?): %w", len(found), len(want), err)
		}
	}
	out := make(map[string]string, len(found))
	for email, id := range found {
		var msg struct{ Text string }
		if err := m.getJSON(ctx, "/api/v1/message/"+url.PathEscape(id), &msg); err != nil {
			return nil, err
		}
		code := sixDigits.FindString(msg.Text)
		if code == "" {
			return nil, fmt.Errorf("mailpit: message %s to %s holds no 6-digit code", id, email)
		}
		out[email] = code
	}
	return out, nil
}
