package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/tokens"
)

// setupRotate adds a signing key. It is published in the JWKS at once and
// signs only after tokens.ActivationDelay, when every client that caches the
// JWKS has it (running instances pick it up within their reload interval);
// --now makes it sign at once, for a leaked key. Tokens of older keys keep
// verifying until those keys are retired.
func setupRotate(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	retire := fs.Duration("retire-after", 0, "also retire keys that stopped signing (a newer key became active) longer ago than this (e.g. 25h: past every token they signed); 0 retires none")
	now := fs.Bool("now", false, "sign with the new key at once, for a leaked key: clients holding a cached JWKS refuse its tokens until they fetch it again")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q", args)
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		sealer, err := openSealer(cfg)
		if err != nil {
			return err
		}
		pool, err := openDB(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		ring, err := tokens.Open(ctx, pool, sealer, tokens.Options{Issuer: cfg.Issuer, AccessTTL: cfg.AccessTokenTTL, Now: time.Now})
		if err != nil {
			return schemaHint(err)
		}
		old := ring.SigningKID()
		if *now {
			kid, err := ring.RotateNow(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "new signing key %s signs now (was %s); tokens signed by %s verify until it is retired\n", kid, old, old)
		} else {
			kid, at, err := ring.Rotate(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "new signing key %s published; it signs from %s (in %s, once every cached JWKS has it), %s until then; tokens signed by %s verify until it is retired\n",
				kid, at.UTC().Format(time.RFC3339), tokens.ActivationDelay, old, old)
		}
		if *retire > 0 {
			retired, err := ring.Retire(ctx, *retire)
			if err != nil {
				return err
			}
			for _, k := range retired {
				fmt.Fprintf(c.stdout, "retired key %s\n", k)
			}
		}
		return nil
	}
}

// openSealer is authd's master key, for the commands that open what authd
// sealed: keys, and the personal fields of events (events ls, projections
// rebuild, check). Without it they refuse to run rather than show or
// rebuild from events whose personal fields they cannot read.
func openSealer(cfg config.Config) (*seal.Sealer, error) {
	keys, created, err := cfg.SealingKeys()
	if err != nil {
		return nil, err
	}
	if created {
		// Development: there was no key authd generated in the same data dir.
		return nil, fmt.Errorf("no AUTHD_MASTER_KEY and no dev key in %s: run authctl with authd's environment", cfg.DataDir)
	}
	return seal.New(keys...)
}
