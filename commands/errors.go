package commands

import (
	"errors"
	"fmt"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/password"
)

// translate returns the commands error that a lower package's error becomes,
// for the lower errors a caller can act on whatever the command: the HTTP
// edge maps the commands' errors only, and knows nothing of what lies below.
// The lower error stays in the chain, so that retry and the rest of commands
// still see a store conflict for what it is. Lower errors whose meaning
// depends on the command (a wrong code, an unknown challenge or ceremony,
// Google's keys) are translated where they are met instead.
func translate(err error) error {
	switch {
	case errors.Is(err, ErrConflict), errors.Is(err, ErrBusy):
		return err // translated already
	case errors.Is(err, eventstore.ErrConflict):
		// A stream moved on under a decision, and retrying did not get past it.
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.Is(err, password.ErrBusy):
		return fmt.Errorf("%w: %w", ErrBusy, err)
	case errors.Is(err, codes.ErrInvalidCode):
		// An emailed code's use, committed with the change it earned, found
		// the code used up by another request meanwhile.
		return ErrInvalidCode
	}
	return err
}
