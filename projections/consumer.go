package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// resetConsumer positions the projection's durable consumer to deliver from
// just after the checkpoint's stream sequence. A consumer left by the last
// leader that stopped exactly there is kept (its settings updated if they
// changed): deleting and creating a replicated consumer each wait for its
// Raft group, and after a NATS node loss that cost seconds of every
// projection's restart. Any other consumer is replaced, since JetStream
// cannot move one's position.
func (r *Runner) resetConsumer(ctx context.Context, stream jetstream.Stream, name string, seq uint64) (jetstream.Consumer, error) {
	cfg := r.consumerConfig(name, seq)
	cons, err := stream.Consumer(ctx, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return nil, fmt.Errorf("projection %s: look up consumer: %w", name, err)
	case stoppedAt(cons.CachedInfo(), cfg, seq):
		if settingsMatch(cons.CachedInfo().Config, cfg) {
			return cons, nil
		}
		// Its position is what it is; only the settings change.
		cfg.DeliverPolicy, cfg.OptStartSeq = cons.CachedInfo().Config.DeliverPolicy, cons.CachedInfo().Config.OptStartSeq
		if cons, err = stream.UpdateConsumer(ctx, cfg); err != nil {
			return nil, fmt.Errorf("projection %s: update consumer: %w", name, err)
		}
		return cons, nil
	default:
		if err := stream.DeleteConsumer(ctx, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("projection %s: delete consumer: %w", name, err)
		}
	}
	if cons, err = stream.CreateOrUpdateConsumer(ctx, cfg); err != nil {
		return nil, fmt.Errorf("projection %s: create consumer: %w", name, err)
	}
	return cons, nil
}

func (r *Runner) consumerConfig(name string, seq uint64) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:       "authd_projection_" + name,
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
	return cfg
}

// stoppedAt says whether a consumer delivers seq+1 next: it delivered and
// had acknowledged everything up to seq and nothing after it, on the same
// subjects with the same acknowledgements.
func stoppedAt(info *jetstream.ConsumerInfo, want jetstream.ConsumerConfig, seq uint64) bool {
	return info.Config.FilterSubject == want.FilterSubject && info.Config.AckPolicy == want.AckPolicy &&
		info.Delivered.Stream == seq && info.AckFloor.Stream == seq && info.NumAckPending == 0 && info.NumRedelivered == 0
}

// settingsMatch says whether a consumer's settings that JetStream can
// update are the ones wanted.
func settingsMatch(have, want jetstream.ConsumerConfig) bool {
	return have.Description == want.Description && have.AckWait == want.AckWait && have.MaxAckPending == want.MaxAckPending
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
