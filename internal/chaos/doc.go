// Package chaos is authd's chaos suite: authd instances as real processes on
// a Postgres cluster and a three-node JetStream cluster of their own, a
// mixed workload that records what each successful answer implies, and
// faults injected one phase at a time (kill -9 of an instance and of the
// relay holder, the whole NATS cluster down, the stream leader's node killed
// mid-publish, a Postgres restart and the termination of every backend).
//
// Its tests carry the build tag chaos, so `go test ./...` leaves them out;
// run them with
//
//	go test -count=1 -tags chaos -timeout 15m ./internal/chaos/
package chaos
