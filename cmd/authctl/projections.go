package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/projections"
)

// checkpointStatus is one follower of the log: a projection or the relay.
type checkpointStatus struct {
	Name       string             `json:"name"`
	NeverRun   bool               `json:"never_run"`
	Checkpoint *eventstore.Cursor `json:"checkpoint"`           // nil when never run
	StreamSeq  *uint64            `json:"stream_seq,omitempty"` // projections only: where its consumer resumes
	LagEvents  int64              `json:"lag_events"`           // committed events past the checkpoint
	LagSeconds float64            `json:"lag_seconds"`          // age of the oldest of them; 0 when caught up
	UpdatedAt  *time.Time         `json:"updated_at"`           // when the checkpoint last moved; nil when never run

	sinceUpdate time.Duration // by the database's clock, for the text output
}

type statusReport struct {
	Projections []checkpointStatus `json:"projections"`
	Relay       checkpointStatus   `json:"relay"`
}

func setupStatus(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	asJSON := fs.Bool("json", false, "print one JSON document instead of a table")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q", args)
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		pool, err := openDB(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		report, err := readStatus(ctx, pool)
		if err != nil {
			return schemaHint(err)
		}
		report.Relay.Name = cfg.NATSStream
		if *asJSON {
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(report)
		}
		return printStatus(c.stdout, report)
	}
}

func readStatus(ctx context.Context, pool *pgxpool.Pool) (statusReport, error) {
	store := eventstore.NewStore(pool, nil, nil) // Backlog reads public columns only
	var report statusReport

	saved := map[string]checkpointStatus{}
	rows, err := pool.Query(ctx, `SELECT name, stream_seq, tx_id::text, position, updated_at,
			extract(epoch FROM now() - updated_at)::float8
		FROM projection_checkpoints`)
	if err != nil {
		return report, fmt.Errorf("read projection checkpoints: %w", err)
	}
	for rows.Next() {
		var (
			st  checkpointStatus
			seq int64
		)
		if err := scanCheckpoint(rows, &st, &st.Name, &seq); err != nil {
			rows.Close()
			return report, fmt.Errorf("read projection checkpoints: %w", err)
		}
		useq := uint64(seq)
		st.StreamSeq = &useq
		saved[st.Name] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return report, fmt.Errorf("read projection checkpoints: %w", err)
	}

	for _, p := range projections.All() {
		st, ok := saved[p.Name()]
		if !ok {
			st = checkpointStatus{Name: p.Name(), NeverRun: true}
		}
		if err := fillLag(ctx, store, &st); err != nil {
			return report, fmt.Errorf("projection %s: %w", p.Name(), err)
		}
		report.Projections = append(report.Projections, st)
	}

	var relay checkpointStatus
	err = scanCheckpoint(pool.QueryRow(ctx, `SELECT tx_id::text, position, updated_at,
			extract(epoch FROM now() - updated_at)::float8
		FROM relay_checkpoint`), &relay)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		relay.NeverRun = true
	case err != nil:
		return report, fmt.Errorf("read relay checkpoint: %w", err)
	}
	if err := fillLag(ctx, store, &relay); err != nil {
		return report, fmt.Errorf("relay: %w", err)
	}
	report.Relay = relay
	return report, nil
}

// scanCheckpoint scans leading columns into lead, then tx, position,
// updated_at and its age.
func scanCheckpoint(row pgx.Row, st *checkpointStatus, lead ...any) error {
	var (
		tx      string
		cur     eventstore.Cursor
		updated time.Time
		age     float64
	)
	if err := row.Scan(append(lead, &tx, &cur.Position, &updated, &age)...); err != nil {
		return err
	}
	var err error
	if cur.Tx, err = eventstore.ParseTx(tx); err != nil {
		return err
	}
	st.Checkpoint, st.UpdatedAt = &cur, &updated
	st.sinceUpdate = time.Duration(age * float64(time.Second))
	return nil
}

func fillLag(ctx context.Context, store *eventstore.Store, st *checkpointStatus) error {
	var after eventstore.Cursor
	if st.Checkpoint != nil {
		after = *st.Checkpoint
	}
	n, age, err := store.Backlog(ctx, after)
	if err != nil {
		return err
	}
	st.LagEvents, st.LagSeconds = n, math.Round(age*1000)/1000
	return nil
}

func printStatus(w io.Writer, r statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tCHECKPOINT\tLAG EVENTS\tLAG\tLAST ADVANCED")
	line := func(kind string, st checkpointStatus) {
		checkpoint, advanced := "never run", "-"
		if !st.NeverRun {
			checkpoint = st.Checkpoint.String()
			advanced = fmt.Sprintf("%s (%s ago)", st.UpdatedAt.UTC().Format(time.RFC3339), max(st.sinceUpdate, 0).Round(time.Second))
		}
		lag := time.Duration(st.LagSeconds * float64(time.Second)).Round(100 * time.Millisecond)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", kind, st.Name, checkpoint, st.LagEvents, lag, advanced)
	}
	for _, st := range r.Projections {
		line("projection", st)
	}
	line("relay", r.Relay)
	return tw.Flush()
}

// projectionNames lists the valid names for error messages.
func projectionNames() string {
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name())
	}
	return strings.Join(names, ", ")
}

func setupRebuild(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	all := fs.Bool("all", false, "rebuild every projection, one after the other")
	batch := fs.Int("batch", projections.DefaultRebuildBatch, "events read and applied per transaction (a larger batch is faster, and holds the live service's read-your-writes waits back longer)")
	return func(ctx context.Context, c *cli, args []string) error {
		var todo []projections.Projection
		switch {
		case *all && len(args) > 0:
			return usagef("give projection names or --all, not both")
		case *all:
			todo = projections.All()
		case len(args) == 0:
			return usagef("name the projection to rebuild (one of: %s) or give --all", projectionNames())
		}
		for _, name := range args {
			p, ok := projections.Find(name)
			if !ok {
				return usagef("unknown projection %q; valid names: %s", name, projectionNames())
			}
			todo = append(todo, p)
		}
		if *batch <= 0 {
			return usagef("--batch must be at least 1, got %d", *batch)
		}

		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		log := c.logger(cfg)
		// A rebuild applies personal fields too (a user's email, say).
		sealer, pool, err := openSealedDB(ctx, cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		store := eventstore.NewStore(pool, sealer, nil)

		for _, p := range todo {
			prog := newProgress(c.stderr, log, p.Name())
			stats, err := projections.Rebuild(ctx, pool, store, p, *batch, prog.update)
			prog.finish(err == nil)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("%s: interrupted; the live projection is untouched (%w)", p.Name(), err)
				}
				return schemaHint(err) // Rebuild's errors name the projection
			}
			rate := 0.0
			if s := stats.Duration.Seconds(); s > 0 {
				rate = float64(stats.Events) / s
			}
			if _, err := fmt.Fprintf(c.stdout, "%s: rebuilt from %d events in %s (%.0f events/s)\n",
				p.Name(), stats.Events, stats.Duration.Round(time.Millisecond), rate); err != nil {
				return err
			}
		}
		return nil
	}
}

// progress shows a rebuild's progress: a bar when stderr is a terminal,
// otherwise a log line every few seconds.
type progress struct {
	name string
	bar  *progressbar.ProgressBar // nil when stderr is not a terminal
	w    io.Writer
	log  *slog.Logger

	start, lastLog time.Time
	done, total    int64
}

// progressLogEvery spaces the plain progress lines written to a log.
const progressLogEvery = 5 * time.Second

func newProgress(stderr io.Writer, log *slog.Logger, name string) *progress {
	p := &progress{name: name, w: stderr, log: log, start: time.Now()}
	p.lastLog = p.start
	if isTerminal(stderr) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("rebuild "+name),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("events"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	} else {
		log.Info("rebuilding projection", "projection", name)
	}
	return p
}

func (p *progress) update(done, total int64) {
	p.done, p.total = done, total
	if p.bar != nil {
		if total > 0 && p.bar.GetMax64() != total {
			p.bar.ChangeMax64(total)
		}
		_ = p.bar.Set64(done)
		return
	}
	if now := time.Now(); now.Sub(p.lastLog) >= progressLogEvery {
		p.lastLog = now
		pct := 100.0
		if total > 0 {
			pct = math.Round(1000*float64(done)/float64(total)) / 10
		}
		p.log.Info("rebuild progress", "projection", p.name, "events", done, "total", total, "percent", pct)
	}
}

// finish clears a bar that completed, and leaves a failed one where it
// stopped, on its own line.
func (p *progress) finish(ok bool) {
	if p.bar == nil {
		return
	}
	if ok {
		_ = p.bar.Finish()
		return
	}
	_ = p.bar.Exit()
	fmt.Fprintln(p.w)
}

// isTerminal reports whether w is a terminal, where a progress bar that
// redraws its line makes sense; in a log file it would be noise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
