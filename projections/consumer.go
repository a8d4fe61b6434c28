package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// resetConsumer (re)creates the projection's durable consumer so that it
// delivers from just after the checkpoint's stream sequence.
func (r *Runner) resetConsumer(ctx context.Context, stream jetstream.Stream, name string, seq uint64) (jetstream.Consumer, error) {
	durable := "authd_projection_" + name
	if err := stream.DeleteConsumer(ctx, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("projection %s: delete consumer: %w", name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "authd projection " + name + "; positioned from its Postgres checkpoint",
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       r.cfg.AckWait,
		MaxAckPending: 4 * r.cfg.BatchSize,
		FilterSubject: r.bus.SubjectFilter(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if seq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("projection %s: create consumer: %w", name, err)
	}
	return cons, nil
}

// delivery hands the consumer's messages to the leader's loop, and the
// consumer failures that end its term.
type delivery struct {
	msgs   chan jetstream.Msg
	failed chan error
	done   chan struct{} // closed once the leader takes no more messages
	cc     jetstream.ConsumeContext
}

// pullExpiry and pullHeartbeat are the life of a projection's pull requests
// and the idle heartbeat it asks JetStream for. A pull request can be lost
// with no error at all (a node that died with it, a consumer whose leader
// moved): only two missing heartbeats tell, and the projection starts
// again. At nats.go's defaults (30 s requests, 15 s heartbeats) the chaos
// suite saw every projection stand still for 30 s after the relay holder's
// kill -9 and after a NATS cluster restart, with all events published.
const (
	pullExpiry    = 5 * time.Second
	pullHeartbeat = time.Second
)

func (r *Runner) consume(cons jetstream.Consumer, name string) (*delivery, error) {
	d := &delivery{msgs: make(chan jetstream.Msg, 2*r.cfg.BatchSize), failed: make(chan error, 1), done: make(chan struct{})}
	cc, err := cons.Consume(d.push, jetstream.PullMaxMessages(r.cfg.BatchSize),
		jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat), jetstream.ConsumeErrHandler(d.fail))
	if err != nil {
		close(d.done)
		return nil, fmt.Errorf("projection %s: consume: %w", name, err)
	}
	d.cc = cc
	return d, nil
}

func (d *delivery) push(m jetstream.Msg) {
	select {
	case d.msgs <- m:
	case <-d.done:
	}
}

// fail passes on the consumer errors that mean nothing more will come.
func (d *delivery) fail(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrNoHeartbeat) {
		select {
		case d.failed <- err:
		default:
		}
	}
}

func (d *delivery) stop() {
	d.cc.Stop()
	close(d.done)
}

// gather adds to batch whatever else has arrived, up to n messages.
func (d *delivery) gather(batch []jetstream.Msg, n int) []jetstream.Msg {
	for len(batch) < n {
		select {
		case m := <-d.msgs:
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}
