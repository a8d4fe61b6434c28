package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/notices"
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
		sealer, pool, err := openSealedDB(ctx, cfg)
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

// resealReport is what keys reseal prints.
type resealReport struct {
	// KeyID is the id of the first master key, the one everything is
	// re-sealed under.
	KeyID  string              `json:"key_id"`
	DryRun bool                `json:"dry_run"`
	Tables []seal.ResealReport `json:"tables"`
	// Left is the sum of the tables' Left: 0 when the other keys can go.
	Left int64 `json:"left"`
}

// setupReseal re-seals under the first master key everything sealed under
// another, after a rotation put a new key first, so that the old one can be
// dropped. Safe while authd runs (with the new key first): only the
// wrapping of each value changes, row by row where it is still as read.
// Exit 0 when nothing is left under another key, 1 otherwise.
func setupReseal(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	dryRun := fs.Bool("dry-run", false, "count what is sealed under other keys, and what does not open, but write nothing")
	batch := fs.Int("batch", seal.DefaultResealBatch, "rows read and updated per transaction")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q", args)
		}
		if *batch <= 0 {
			return usagef("--batch must be at least 1, got %d", *batch)
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		sealer, pool, err := openSealedDB(ctx, cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		o := seal.ResealOptions{Batch: *batch, DryRun: *dryRun}
		report := resealReport{KeyID: sealer.CurrentKID(), DryRun: *dryRun}
		// Each step adds its tables' reports, those it finished before an
		// error too, so that what was done is printed either way.
		steps := []func() ([]seal.ResealReport, error){
			func() ([]seal.ResealReport, error) {
				return eventstore.NewStore(pool, sealer, nil).Reseal(ctx, o)
			},
			func() ([]seal.ResealReport, error) { return tokens.Reseal(ctx, pool, sealer, o) },
			func() ([]seal.ResealReport, error) {
				r, err := notices.NewFarewells(sealer).Reseal(ctx, pool, o)
				return []seal.ResealReport{r}, err
			},
		}
		var failed error
		for _, step := range steps {
			tables, err := step()
			report.Tables = append(report.Tables, tables...)
			if err != nil {
				failed = schemaHint(err)
				break
			}
		}
		var unopened int64
		for _, t := range report.Tables {
			report.Left += t.Left
			unopened += t.Failed
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
		switch {
		case failed != nil:
			return failed
		case report.Left > 0 && unopened > 0:
			return fmt.Errorf("%d values still sealed under other keys, %d of them open under no key held (see errors)", report.Left, unopened)
		case report.Left > 0:
			return fmt.Errorf("%d values still sealed under other keys", report.Left)
		}
		return nil
	}
}
