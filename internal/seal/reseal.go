package seal

import (
	"context"
	"fmt"
)

// CurrentKID is the id of the key Seal uses: the first one given to New.
// A value under any other id is one that a re-seal moves to it.
func (s *Sealer) CurrentKID() string { return s.current }

// ResealOptions say how a re-seal walks a table.
type ResealOptions struct {
	// Batch is how many rows one read and one update take (one short
	// transaction each): authd's relay publishes nothing newer than the
	// oldest running transaction, so a re-seal must never hold a long one.
	// 0 means DefaultResealBatch.
	Batch int
	// DryRun reads and opens, but writes nothing.
	DryRun bool
}

// DefaultResealBatch is ResealOptions.Batch's default.
const DefaultResealBatch = 1000

// maxReportedErrors bounds the failures a Report names: a table sealed under
// a key that is gone would otherwise name every one of its rows.
const maxReportedErrors = 20

// ResealReport is what a re-seal did to one table.
type ResealReport struct {
	Table string `json:"table"`
	// Resealed rows now sealed under the first key by this run (0 in a dry
	// run).
	Resealed int64 `json:"resealed"`
	// Left rows are still sealed under another key: in a dry run every one
	// found, otherwise those that did not open (Failed) and those changed
	// while the re-seal ran that are still under an old key.
	Left int64 `json:"left"`
	// Failed rows open under no key this Sealer holds: they block dropping
	// the old key until someone decides what they are.
	Failed int64 `json:"failed"`
	// Changed rows were changed by someone else between the read and the
	// update (an erasure, say) and left as that change made them.
	Changed int64    `json:"changed"`
	Errors  []string `json:"errors,omitempty"`
}

func (r *ResealReport) fail(err error) {
	r.Failed++
	r.Left++
	if len(r.Errors) < maxReportedErrors {
		r.Errors = append(r.Errors, err.Error())
	}
}

// ResealRow is one sealed value that a re-seal read: where it is (Key), how
// it is sealed, and the associated data it was sealed with.
type ResealRow[K comparable] struct {
	Key    K
	KID    string
	Box    []byte
	AAD    []byte
	NewKID string // set by Reseal before Swap: the value sealed under the first key
	NewBox []byte
}

// ResealTable is the SQL side of a re-seal, which the package that owns a
// table writes; Reseal does the rest.
type ResealTable[K comparable] struct {
	Name string
	// Next reads up to n rows after cursor (the zero K at first) that are
	// sealed under a key other than current, and returns the cursor to go
	// on from and whether the table is done.
	Next func(ctx context.Context, after K, n int, current string) (rows []ResealRow[K], next K, done bool, err error)
	// Swap writes each row's NewKID and NewBox where the row still holds
	// its KID and Box (a compare-and-set, so a concurrent change wins), and
	// returns the keys of the rows it wrote.
	Swap func(ctx context.Context, rows []ResealRow[K]) (written []K, err error)
	// Stale returns how many of keys are sealed under a key other than
	// current: of the rows a concurrent change kept from Swap, those that
	// are still left to re-seal.
	Stale func(ctx context.Context, keys []K, current string) (int64, error)
}

// Reseal re-seals under the first key every value of t sealed under
// another: the plaintext stays the same, only its wrapping changes, so
// processes that opened a value before go on using it. A value that opens
// under no key s holds is counted and named in the report, and the rest
// goes on; an error of the database stops it, with the report so far.
func Reseal[K comparable](ctx context.Context, s *Sealer, t ResealTable[K], o ResealOptions) (ResealReport, error) {
	if o.Batch <= 0 {
		o.Batch = DefaultResealBatch
	}
	r := ResealReport{Table: t.Name}
	current := s.CurrentKID()
	var cursor K
	for {
		rows, next, done, err := t.Next(ctx, cursor, o.Batch, current)
		if err != nil {
			return r, fmt.Errorf("reseal %s: read: %w", t.Name, err)
		}
		todo := rows[:0]
		for _, row := range rows {
			plain, err := s.Open(row.KID, row.Box, row.AAD)
			if err != nil {
				r.fail(fmt.Errorf("%s %v: %w", t.Name, row.Key, err))
				continue
			}
			if o.DryRun {
				r.Left++
				continue
			}
			if row.NewKID, row.NewBox, err = s.Seal(plain, row.AAD); err != nil {
				return r, fmt.Errorf("reseal %s %v: %w", t.Name, row.Key, err)
			}
			todo = append(todo, row)
		}
		if len(todo) > 0 {
			if err := swapRows(ctx, &r, t, todo, current); err != nil {
				return r, err
			}
		}
		if done {
			return r, nil
		}
		cursor = next
	}
}

// swap writes rows and accounts for those a concurrent change kept.
func swapRows[K comparable](ctx context.Context, r *ResealReport, t ResealTable[K], rows []ResealRow[K], current string) error {
	written, err := t.Swap(ctx, rows)
	if err != nil {
		return fmt.Errorf("reseal %s: update: %w", t.Name, err)
	}
	r.Resealed += int64(len(written))
	if len(written) == len(rows) {
		return nil
	}
	wrote := make(map[K]bool, len(written))
	for _, k := range written {
		wrote[k] = true
	}
	var kept []K
	for _, row := range rows {
		if !wrote[row.Key] {
			kept = append(kept, row.Key)
		}
	}
	r.Changed += int64(len(kept))
	stale, err := t.Stale(ctx, kept, current)
	if err != nil {
		return fmt.Errorf("reseal %s: recount: %w", t.Name, err)
	}
	r.Left += stale
	return nil
}

// ResealColumns are rows as the arrays of an UPDATE ... FROM unnest(...),
// which writes a batch in one statement.
func ResealColumns[K comparable](rows []ResealRow[K]) (keys []K, oldKIDs []string, oldBoxes [][]byte, kids []string, boxes [][]byte) {
	for _, r := range rows {
		keys = append(keys, r.Key)
		oldKIDs = append(oldKIDs, r.KID)
		oldBoxes = append(oldBoxes, r.Box)
		kids = append(kids, r.NewKID)
		boxes = append(boxes, r.NewBox)
	}
	return keys, oldKIDs, oldBoxes, kids, boxes
}
