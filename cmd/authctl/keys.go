package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/authd/authd/seal"
	"github.com/authd/authd/tokens"
)

// setupRotate adds a signing key. Running authd instances pick it up within
// their reload interval, and at once when they meet a token it signed; tokens
// of older keys keep verifying until those keys are retired.
func setupRotate(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	retire := fs.Duration("retire-after", 0, "also retire keys that stopped signing longer ago than this (e.g. 25h: past every token they signed); 0 retires none")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q", args)
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		keys := cfg.MasterKeys
		if len(keys) == 0 {
			// Development: the key authd generated in the same data dir.
			k, created, err := seal.DevKey(cfg.DataDir)
			if err != nil {
				return err
			}
			if created {
				return fmt.Errorf("no AUTHD_MASTER_KEY and no dev key in %s: run authctl with authd's environment", cfg.DataDir)
			}
			keys = [][]byte{k}
		}
		sealer, err := seal.New(keys...)
		if err != nil {
			return err
		}
		pool, err := openDB(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		ring, err := tokens.Open(ctx, pool, sealer, cfg.Issuer, time.Now)
		if err != nil {
			return schemaHint(err)
		}
		old := ring.SigningKID()
		kid, err := ring.Rotate(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "new signing key %s (was %s); tokens signed by %s verify until it is retired\n", kid, old, old)
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
