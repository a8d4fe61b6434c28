package commands

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/password"
)

// A write that loses a race answers with the commands' own ErrConflict,
// which the HTTP edge maps, while commands (retry) still sees the store's
// conflict in it; so does a conflict that retrying did not get past.
func TestStoreConflictsBecomeErrConflict(t *testing.T) {
	t.Parallel()
	a, _ := tracedApp(t)
	ctx := t.Context()
	id, tenant := uuid.New(), uuid.New()
	write := func() error {
		c := a.newChange(Request{IP: "192.0.2.1"})
		if err := c.create(domain.UserStream(id), tenant, id, &domain.EmailVerified{UserID: id}); err != nil {
			t.Fatal(err)
		}
		_, err := a.commit(ctx, c)
		return err
	}
	if err := write(); err != nil {
		t.Fatal(err)
	}
	err := write() // expects the stream still empty
	if !errors.Is(err, ErrConflict) || !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("a lost race answered %v, want ErrConflict with the store's conflict in it", err)
	}

	tries := 0
	_, err = retry(ctx, func() (struct{}, error) {
		tries++
		return struct{}{}, eventstore.ErrConflict
	})
	if !errors.Is(err, ErrConflict) || tries < 2 {
		t.Errorf("retry gave up with %v after %d tries, want ErrConflict after retrying", err, tries)
	}
}

// A full password hasher is the commands' ErrBusy, once however often it is
// translated; other errors pass as they are.
func TestTranslateLowerErrors(t *testing.T) {
	busy := translate(fmt.Errorf("hash: %w", password.ErrBusy))
	if !errors.Is(busy, ErrBusy) || !errors.Is(busy, password.ErrBusy) {
		t.Errorf("a busy hasher became %v, want ErrBusy", busy)
	}
	if again := translate(busy); again != busy {
		t.Errorf("translating %v again gave %v", busy, again)
	}
	other := errors.New("something else")
	if got := translate(other); got != other {
		t.Errorf("translate(%v) = %v, want it unchanged", other, got)
	}
	if got := translate(nil); got != nil {
		t.Errorf("translate(nil) = %v", got)
	}
}
