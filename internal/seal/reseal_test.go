package seal

import (
	"context"
	"testing"
)

// memTable is a table of sealed values in memory, walked by index.
type memTable struct {
	kids  []string
	boxes [][]byte
}

func (m *memTable) table() ResealTable[int] {
	aad := func(i int) []byte { return []byte{byte(i)} }
	return ResealTable[int]{
		Name: "mem",
		Next: func(_ context.Context, after, n int, current string) ([]ResealRow[int], int, bool, error) {
			var out []ResealRow[int]
			i := after
			for ; i < len(m.kids) && len(out) < n; i++ {
				if m.kids[i] != current {
					out = append(out, ResealRow[int]{Key: i, KID: m.kids[i], Box: m.boxes[i], AAD: aad(i)})
				}
			}
			return out, i, i >= len(m.kids), nil
		},
		Swap: func(_ context.Context, rows []ResealRow[int]) ([]int, error) {
			var written []int
			for _, r := range rows {
				m.kids[r.Key], m.boxes[r.Key] = r.NewKID, r.NewBox
				written = append(written, r.Key)
			}
			return written, nil
		},
		Stale: func(context.Context, []int, string) (int64, error) { return 0, nil },
	}
}

// Reseal walks the whole table across batches, re-seals what opens and
// counts what does not, naming only the first maxReportedErrors of them so
// that a table sealed under a lost key does not make the report as long.
func TestResealCountsEveryFailureAndNamesTheFirst(t *testing.T) {
	oldKey, newKey, lostKey := key(t), key(t), key(t)
	before, _ := New(oldKey)
	lost, _ := New(lostKey)
	rotated, _ := New(newKey, oldKey)
	m := &memTable{}
	for i := range 30 {
		s := before
		if i%10 != 0 {
			s = lost
		}
		kid, box, err := s.Seal([]byte("value"), []byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		m.kids, m.boxes = append(m.kids, kid), append(m.boxes, box)
	}
	r, err := Reseal(context.Background(), rotated, m.table(), ResealOptions{Batch: 4})
	if err != nil {
		t.Fatal(err)
	}
	if r.Resealed != 3 || r.Failed != 27 || r.Left != 27 || len(r.Errors) != maxReportedErrors {
		t.Fatalf("report %+v (%d errors), want 3 re-sealed, 27 failed and left, %d named", r, len(r.Errors), maxReportedErrors)
	}
	newOnly, _ := New(newKey)
	for _, i := range []int{0, 10, 20} {
		if m.kids[i] != rotated.CurrentKID() {
			t.Fatalf("row %d still under %s", i, m.kids[i])
		}
		if plain, err := newOnly.Open(m.kids[i], m.boxes[i], []byte{byte(i)}); err != nil || string(plain) != "value" {
			t.Fatalf("row %d with the new key alone: %q (%v)", i, plain, err)
		}
	}
}
