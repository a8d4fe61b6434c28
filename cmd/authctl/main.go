// Command authctl is authd's operator tool: it migrates the database, reports
// and rebuilds projections, tails and lists events, and probes readiness.
//
// It reads the same environment variables as authd (see config.Load), so it
// can run beside the server, in its container, with nothing else to set up.
// It never starts a NATS server: without NATS_URL it connects to the embedded
// one authd serves at AUTHD_EMBEDDED_NATS_ADDR.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
