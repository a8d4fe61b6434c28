package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/authd/authd/internal/config"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed, or found something unhealthy
	exitUsage   = 2 // the command line was wrong
)

// cli is what every command gets: the environment and where to write.
type cli struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

// command is one subcommand. setup declares its flags on fs and returns the
// function that runs it with the parsed flags and the positional arguments;
// help calls setup too, only to print the flags.
type command struct {
	path     string // "projections rebuild"
	synopsis string // arguments after the path, for the usage text
	summary  string
	setup    func(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error
}

func commandTable() []command {
	return []command{
		{"migrate", "", "create the database if missing and apply pending migrations", setupMigrate},
		{"projections status", "[--json]", "checkpoint, lag and last progress of each projection and of the relay", setupStatus},
		{"projections rebuild", "NAME...|--all [--batch N]", "rebuild projections from the event log (safe while authd runs; needs the master key)", setupRebuild},
		{"events tail", "[--type T] [--user ID] [--from-start]", "print events from JetStream as JSON lines until interrupted", setupTail},
		{"events ls", "--stream S", "print a stream's events, without secrets, as JSON lines; an erased user's personal fields as [erased] (needs the master key)", setupList},
		{"keys rotate", "[--retire-after D]", "add a new JWT signing key; old keys keep verifying until retired", setupRotate},
		{"keys reseal", "[--dry-run] [--batch N]", "after a master key rotation, re-seal under the first key what is sealed under the others; JSON report, exit 0 when none is left (safe while authd runs; needs the master key)", setupReseal},
		{"check", "[--timeout D] [--sample N] [--pending-max D]", "audit the log, the stream and every projection; JSON report, exit 0 clean, 1 inconsistent, 2 could not check (needs the master key)", setupCheck},
		{"health", "[URL]", "GET URL (default /readyz on AUTHD_ADDR); exit 0 on 200, 1 otherwise", setupHealth},
		{"help", "[COMMAND]", "show this text, or a command's flags", nil},
	}
}

// usageError is a wrong command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run is authctl's main, with its environment passed in so tests can call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &cli{getenv: getenv, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return c.help(args[1:])
	}
	cmd, rest, err := findCommand(args)
	if err != nil {
		fmt.Fprintf(stderr, "authctl: %v\n\n", err)
		printUsage(stderr)
		return exitUsage
	}
	fs := newFlagSet(cmd)
	exec := cmd.setup(fs)
	positional, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(stdout, cmd)
		return exitOK
	}
	if err == nil {
		err = exec(ctx, c, positional)
	}
	return report(stderr, cmd, err)
}

// report prints err, if any, as "authctl: <command>: <why>" and picks the
// exit status.
func report(stderr io.Writer, cmd command, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "authctl: %s: %v\nusage: authctl %s %s (see: authctl help %s)\n",
			cmd.path, err, cmd.path, cmd.synopsis, cmd.path)
		return exitUsage
	}
	fmt.Fprintf(stderr, "authctl: %s: %v\n", cmd.path, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

// findCommand matches the longest command path at the start of args.
func findCommand(args []string) (command, []string, error) {
	for _, cmd := range commandTable() {
		words := strings.Fields(cmd.path)
		if cmd.setup != nil && len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			return cmd, args[len(words):], nil
		}
	}
	if sub := subcommandsOf(args[0]); len(sub) > 0 {
		if len(args) == 1 {
			return command{}, nil, fmt.Errorf("%s needs a subcommand: %s", args[0], strings.Join(sub, ", "))
		}
		return command{}, nil, fmt.Errorf("unknown command %q (%s has: %s)", args[0]+" "+args[1], args[0], strings.Join(sub, ", "))
	}
	return command{}, nil, fmt.Errorf("unknown command %q", args[0])
}

func subcommandsOf(group string) []string {
	var out []string
	for _, cmd := range commandTable() {
		if g, sub, ok := strings.Cut(cmd.path, " "); ok && g == group {
			out = append(out, sub)
		}
	}
	return out
}

func newFlagSet(cmd command) *flag.FlagSet {
	fs := flag.NewFlagSet("authctl "+cmd.path, flag.ContinueOnError)
	// Errors and help are printed by run, in authctl's own format.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterspersed parses flags that come before, between or after the
// positional arguments (the flag package alone stops at the first of them),
// so `projections rebuild users --batch 500` works. After "--" everything is
// positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error()}
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

func (c *cli) help(args []string) int {
	if len(args) == 0 {
		printUsage(c.stdout)
		return exitOK
	}
	cmd, rest, err := findCommand(args)
	if err != nil || len(rest) > 0 {
		if err == nil {
			err = fmt.Errorf("unknown command %q", strings.Join(args, " "))
		}
		fmt.Fprintf(c.stderr, "authctl: help: %v\n\n", err)
		printUsage(c.stderr)
		return exitUsage
	}
	printCommandHelp(c.stdout, cmd)
	return exitOK
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `authctl is authd's operator tool. It reads the same environment as authd:
DATABASE_URL, NATS_URL (empty: authd's embedded NATS at AUTHD_EMBEDDED_NATS_ADDR),
AUTHD_NATS_STREAM, AUTHD_NATS_SUBJECT_PREFIX, AUTHD_ADDR.

Usage:
  authctl <command> [arguments]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, cmd := range commandTable() {
		fmt.Fprintf(tw, "  %s %s\t%s\n", cmd.path, cmd.synopsis, cmd.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Exit status: 0 success, 1 failure (or not ready, for health; inconsistent, for
check), 2 wrong usage (or, for check, could not check).
`)
}

func printCommandHelp(w io.Writer, cmd command) {
	fmt.Fprintf(w, "usage: authctl %s %s\n\n%s\n", cmd.path, cmd.synopsis, cmd.summary)
	if cmd.setup == nil {
		return
	}
	fs := newFlagSet(cmd)
	cmd.setup(fs)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nFlags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// loadConfig reads authd's configuration from the environment.
func (c *cli) loadConfig() (config.Config, error) {
	cfg, err := config.Load(c.getenv)
	if err != nil {
		return config.Config{}, fmt.Errorf("read configuration from the environment: %w", err)
	}
	return cfg, nil
}

// logger writes progress logs to stderr at the configured level.
func (c *cli) logger(cfg config.Config) *slog.Logger {
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
}
