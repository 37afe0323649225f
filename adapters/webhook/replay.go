package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
)

// ReplayResult says what a replay sent.
type ReplayResult struct {
	Matched   int `json:"matched"`
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
}

// MaxReplay bounds the events one replay reads.
const MaxReplay = 100000

// replayAttempts bounds the attempts per event of a replay (a replay is
// done while the operator waits; failures are reported, not retried for
// long).
const replayAttempts = 3

// Replay re-sends, in stream order and synchronously, the subscription's
// matching events stored from from (inclusive) up to to (zero: up to the
// stream's end when the replay starts). The events keep their webhook-id,
// so a receiver that de-duplicates ignores those it already has. The live
// delivery goes on meanwhile. Paused and disabled subscriptions can be
// replayed; deleted ones cannot.
func (m *Manager) Replay(ctx context.Context, id string, from, to time.Time) (ReplayResult, error) {
	var res ReplayResult
	w, err := m.Get(id)
	if err != nil {
		return res, err
	}
	if w.State == domain.WebhookDeleted {
		return res, domain.ErrDeleted
	}
	if from.IsZero() {
		return res, fmt.Errorf("%w: replay needs a start time", ErrInvalid)
	}
	if !to.IsZero() && to.Before(from) {
		return res, fmt.Errorf("%w: the end of the window is before its start", ErrInvalid)
	}
	info, err := m.events.Info(ctx)
	if err != nil {
		return res, err
	}
	last := info.State.LastSeq
	if last == 0 {
		return res, nil
	}
	r, err := m.secrets.get(ctx, id)
	if err != nil {
		return res, err
	}
	keys, err := r.keys(m.cfg.Now())
	if err != nil {
		return res, err
	}
	sg := newSigner(keys)
	filter := connSubjectPrefix + "*"
	if w.Connection != "" {
		filter = connSubjectPrefix + w.Connection
	}
	cons, err := m.events.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from})
	if err != nil {
		return res, err
	}
	providers := map[string]string{}
	for read := 0; read < MaxReplay; {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return res, err
		}
		got, done := 0, false
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			if meta.Sequence.Stream > last || (!to.IsZero() && meta.Timestamp.After(to)) {
				done = true
				continue
			}
			var h head
			if json.Unmarshal(msg.Data(), &h) != nil {
				continue
			}
			conn := strings.TrimPrefix(msg.Subject(), connSubjectPrefix)
			p := ""
			if w.Provider != "" && m.cfg.Provider != nil {
				var ok bool
				if p, ok = providers[conn]; !ok {
					if p, err = m.cfg.Provider(ctx, conn); err != nil {
						return res, err
					}
					providers[conn] = p
				}
			} else {
				p = w.Provider
			}
			typ := domain.EventType(strings.TrimPrefix(h.Type, "tokenline."))
			if !w.Matches(typ, p, conn) {
				continue
			}
			res.Matched++
			ok := false
			for attempt := 1; attempt <= replayAttempts && !ok; attempt++ {
				r := m.send(ctx, w, sg, h.ID, msg.Data())
				ok = r.ok()
				a := Attempt{Time: m.cfg.Now().UTC(), EventID: h.ID, EventType: h.Type, Connection: conn, StreamSeq: meta.Sequence.Stream,
					Attempt: attempt, Status: r.status, Error: r.err, LatencyMS: ms(r.latency), Instance: m.cfg.Instance, Outcome: "replayed"}
				if !ok {
					a.Outcome = "replay_failed"
					if attempt < replayAttempts && !sleep(ctx, min(m.backoff(attempt, r.retryAfter), 10*time.Second)) {
						return res, ctx.Err()
					}
				}
				m.record(id, a)
			}
			if ok {
				res.Delivered++
			} else {
				res.Failed++
			}
			if meta.NumPending == 0 || meta.Sequence.Stream >= last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			return res, err
		}
		read += got
		if done || got == 0 {
			break
		}
	}
	return res, nil
}

func isTimeout(err error) bool { return err != nil && strings.Contains(err.Error(), "timeout") }
