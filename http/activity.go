package http

import (
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/projections"
)

// activity is GET /me/activity: a page of what happened to the caller's
// account, newest first. The read model answers with the log's help for
// what it has not applied yet (projections.UserActivity), so a user who
// looks right after acting sees what they did.
func (a *Accounts) activity(c *fiber.Ctx) error {
	args := c.Context().QueryArgs()
	limit := projections.DefaultActivityLimit
	if args.Has("limit") {
		n, err := strconv.Atoi(string(args.Peek("limit")))
		if err != nil || n < 1 || n > projections.MaxActivityLimit {
			return &Error{Status: fiber.StatusBadRequest, Code: "validation_failed",
				Message: "limit must be a whole number from 1 to " + strconv.Itoa(projections.MaxActivityLimit)}
		}
		limit = n
	}
	var before *eventstore.Cursor
	if args.Has("before") {
		cursor, err := projections.ParseActivityCursor(string(args.Peek("before")))
		if err != nil {
			return &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: "before must be a next cursor of an earlier page"}
		}
		before = &cursor
	}
	page, err := projections.UserActivity(c.UserContext(), a.Reads, a.Store, claimsOf(c).UserID, before, limit)
	if err != nil {
		return err
	}
	return c.JSON(page)
}
