package jsstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/events"
)

// The read behind `tokenline verify`: every message of the stream up to a
// sequence, in order, as the link check takes it (events.LinkRecord). It is
// Read's pipeline with the decode replaced by events.ParseLink, which hashes
// the message and reads only its link, type and terminal flag; a message
// ParseLink does not read (not in the canonical form, not an event) is
// decoded in full, as Read would. It runs the same pipeline as Read
// (pipe.run): ReadWorkers parse chunks of messages while the consumer
// delivers more, and fn is called from the calling goroutine in stream
// order.

const linkChunkSize = 512

// linkPipe parses every message of a readLinks.
var linkPipe = newPipe(linkChunkSize, func(r *events.LinkRecord) *events.Record { return &r.Record }, parseLink)

// readLinks calls fn for every message with a stream sequence in [1, to]
// (to > 0: a sequence the stream has), in order, and returns the last
// sequence it delivered. fn must not keep the record.
func (s *Store) readLinks(ctx context.Context, to uint64, fn func(*events.LinkRecord)) (uint64, error) {
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, fmt.Errorf("jsstore: read consumer: %w", err)
	}
	defer s.dropConsumer(cons)

	return linkPipe.run(ctx, cons, to, func(r *events.LinkRecord) error {
		fn(r)
		return nil
	})
}

// parseLink completes a record (Record's Seq, Subject and Stored set): its
// Seq, and the message's link or its whole decode.
func parseLink(r *events.LinkRecord, m jetstream.Msg, dec *events.Decoder) {
	r.Seq = r.Record.Seq
	if m == nil || r.Record.Err != nil {
		return
	}
	data := m.Data()
	if events.ParseLink(data, &r.Info) && subjectIsBytes(r.Record.Subject, r.Info.Subject) {
		r.Light = true
		return
	}
	decodeData(&r.Record, data, dec)
}

// subjectIsBytes is subjectIs for an id in the message bytes, without
// converting them to a string (a conversion to pass it would allocate).
func subjectIsBytes(subject string, connectionID []byte) bool {
	return len(subject) == len(events.SubjectPrefix)+len(connectionID) &&
		strings.HasPrefix(subject, events.SubjectPrefix) && subject[len(events.SubjectPrefix):] == string(connectionID)
}
