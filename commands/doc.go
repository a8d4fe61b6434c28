// Package commands holds one handler per intent: each loads the aggregates it
// needs from their events, lets the domain decide, and appends the outcome.
package commands
