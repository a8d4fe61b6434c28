package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/redact"
)

func setupTail(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	typ := fs.String("type", "", "only events of this type (e.g. UserRegistered): narrows the subject filter")
	user := fs.String("user", "", "only events whose envelope has this user_id (a UUID)")
	fromStart := fs.Bool("from-start", false, "begin with the first event the stream holds instead of new ones")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q", args)
		}
		if *typ != "" && !validSubjectToken(*typ) {
			return usagef("--type %q is not an event type (one word, e.g. UserRegistered)", *typ)
		}
		var userID uuid.UUID
		if *user != "" {
			var err error
			if userID, err = uuid.Parse(*user); err != nil {
				return usagef("--user %q is not a UUID", *user)
			}
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		return tail(ctx, c, cfg, tailOptions{eventType: *typ, user: userID, fromStart: *fromStart})
	}
}

type tailOptions struct {
	eventType string
	user      uuid.UUID // uuid.Nil: every user
	fromStart bool
}

// natsURL is where authctl finds NATS: NATS_URL, or else the embedded server
// of the authd that runs beside it. authctl never starts a server of its own:
// it would be an empty one, with none of authd's events.
func natsURL(cfg config.Config) string {
	if cfg.NATSURL != "" {
		return cfg.NATSURL
	}
	return "nats://" + cfg.EmbeddedNATSAddr
}

func tail(ctx context.Context, c *cli, cfg config.Config, opt tailOptions) error {
	log := c.logger(cfg)
	nc, err := connectNATS(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("create JetStream handle: %w", err)
	}
	stream, err := js.Stream(ctx, cfg.NATSStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("JetStream stream %q not found at %s: is authd running with the same NATS_URL and AUTHD_NATS_STREAM?", cfg.NATSStream, redact.NATSURLs(natsURL(cfg)))
	}
	if err != nil {
		return fmt.Errorf("look up JetStream stream %q: %w", cfg.NATSStream, err)
	}

	subject := cfg.NATSSubjectPrefix + ".>"
	if opt.eventType != "" {
		subject = cfg.NATSSubjectPrefix + "." + opt.eventType
	}
	deliver, from := jetstream.DeliverNewPolicy, "new events"
	if opt.fromStart {
		deliver, from = jetstream.DeliverAllPolicy, "the start of the stream"
	}
	// An ordered consumer is ephemeral, acks nothing and recreates itself
	// after a reconnect at the next sequence, so a tail never disturbs the
	// projections' durable consumers and never skips or repeats a message.
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  deliver,
	})
	if err != nil {
		return fmt.Errorf("create consumer on %s: %w", cfg.NATSStream, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	defer msgs.Stop()
	attrs := []any{"stream", cfg.NATSStream, "subject", subject, "from", from}
	if opt.user != uuid.Nil {
		attrs = append(attrs, "user", opt.user)
	}
	log.Info("tailing events; interrupt to stop", attrs...)

	var line bytes.Buffer
	for {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receive from %s: %w", subject, err)
		}
		line.Reset()
		if err := json.Compact(&line, msg.Data()); err != nil {
			log.Warn("skipping a message that is not JSON", "subject", msg.Subject(), "err", err)
			continue
		}
		if opt.user != uuid.Nil {
			if e, err := eventstore.FromMessage(msg.Headers(), msg.Data()); err != nil || e.UserID != opt.user {
				continue
			}
		}
		line.WriteByte('\n')
		if _, err := c.stdout.Write(line.Bytes()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
}

// connectNATS connects once and fails at once when NATS is not there, unlike
// natsbus.Open, which retries in the background (right for a server, wrong for
// a command) and creates the stream (a tail must not).
func connectNATS(ctx context.Context, cfg config.Config, log *slog.Logger) (*nats.Conn, error) {
	target := redact.NATSURLs(natsURL(cfg))
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	nc, err := nats.Connect(natsURL(cfg),
		nats.Name("authctl"),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "addr", nc.ConnectedAddr())
		}),
	)
	if err != nil {
		hint := ""
		if cfg.NATSURL == "" {
			hint = " (NATS_URL is empty, so this is the embedded server of a running authd, AUTHD_EMBEDDED_NATS_ADDR)"
		}
		return nil, fmt.Errorf("connect to NATS at %s%s: %w", target, hint, err)
	}
	return nc, nil
}

// validSubjectToken reports whether s can be one token of a NATS subject.
func validSubjectToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

func setupList(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	streamID := fs.String("stream", "", "the stream to list, e.g. user-<uuid> (required)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q (name the stream with --stream)", args)
		}
		if *streamID == "" {
			return usagef("--stream is required")
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		// The master key opens the personal fields (ReadStream never reads
		// the secrets): without it, they could not be shown.
		sealer, pool, err := openSealedDB(ctx, cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		store := eventstore.NewStore(pool, sealer, nil)
		events, err := store.ReadStream(ctx, *streamID)
		if err != nil {
			return schemaHint(err)
		}
		if len(events) == 0 {
			return fmt.Errorf("stream %q has no events", *streamID)
		}
		w := bufio.NewWriter(c.stdout)
		for _, e := range events {
			if e.Erased {
				if e, err = showErased(e); err != nil {
					return err
				}
			}
			b, err := e.MarshalEnvelope()
			if err != nil {
				return err
			}
			w.Write(b)
			w.WriteByte('\n')
		}
		return w.Flush()
	}
}

// erasedMark stands in events ls for a personal field of an erased user.
const erasedMark = "[erased]"

// showErased marks the personal fields of an erased event, which reads
// leave out, as erasedMark: the metadata's ip and user agent, and each of
// its type's personal fields (all of them: which ones the event had set is
// erased too).
func showErased(e eventstore.Event) (eventstore.Event, error) {
	e.Metadata.IP, e.Metadata.UserAgent = erasedMark, erasedMark
	marks := map[string]string{}
	for _, f := range eventstore.PersonalFields(e.Type) {
		marks[f] = erasedMark
	}
	if len(marks) == 0 {
		return e, nil
	}
	var err error
	if e.Personal, err = json.Marshal(marks); err != nil {
		return e, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return e, nil
}
