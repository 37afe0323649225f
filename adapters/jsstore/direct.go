package jsstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// directBatch is how many messages one batched direct get asks for.
const directBatch = 256

// subjectRange calls fn for every message on subject with a stream sequence
// in [from, upTo], in order, using batched direct gets (one round trip per
// directBatch messages) instead of one request per message.
func (s *Store) subjectRange(ctx context.Context, subject string, from, upTo uint64, fn func(seq uint64, data []byte) error) error {
	inbox := s.nc.NewRespInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	api := "$JS.API.DIRECT.GET." + s.cfg.Stream
	for next := from; next <= upTo; {
		req, _ := json.Marshal(struct {
			Seq     uint64 `json:"seq"`
			NextFor string `json:"next_by_subj"`
			Batch   int    `json:"batch"`
			UpToSeq uint64 `json:"up_to_seq"`
		}{next, subject, directBatch, upTo})
		if err := s.nc.PublishRequest(api, inbox, req); err != nil {
			return err
		}
		got := 0
		for {
			m, err := nextMsg(ctx, sub)
			if err != nil {
				return fmt.Errorf("jsstore: direct get %s: %w", subject, err)
			}
			if status := m.Header.Get("Status"); status != "" {
				switch status {
				case "204": // end of this batch
					pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
					if pending == 0 || got == 0 {
						return nil
					}
				case "404":
					return nil
				default:
					return fmt.Errorf("jsstore: direct get %s: status %s %s", subject, status, m.Header.Get("Description"))
				}
				break
			}
			seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
			if err != nil || seq < next {
				return fmt.Errorf("jsstore: direct get %s: bad sequence %q", subject, m.Header.Get("Nats-Sequence"))
			}
			if err := fn(seq, m.Data); err != nil {
				return err
			}
			got++
			next = seq + 1
		}
	}
	return nil
}

// nextMsg waits for the next message of a direct get, until ctx ends or,
// when ctx has no deadline, for at most directTimeout.
func nextMsg(ctx context.Context, sub *nats.Subscription) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, directTimeout)
		defer cancel()
	}
	return sub.NextMsgWithContext(ctx)
}

// directTimeout bounds the wait for one direct-get response when the
// caller's context has no deadline.
const directTimeout = 10 * time.Second
