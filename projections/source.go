package projections

import (
	"context"
	"io"
	"strings"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// The ports of the projections: where events come from and where a
// projection keeps its durable state. adapters/jsstore implements both on
// NATS JetStream (*jsstore.Store and *jsstore.Checkpoints); this package
// imports no adapter.

// Source is the event stream as the projections read it.
type Source interface {
	// Info returns the stream's identity and last sequence.
	Info(ctx context.Context) (events.StreamInfo, error)
	// Read calls fn, from the calling goroutine, for every record of the
	// part of the stream r selects, in stream order, and returns the last
	// sequence it delivered (0 if none). A record that does not decode is
	// delivered with Err set. fn must not keep the pointer; fn returning an
	// error stops the read with that error. Read leaves nothing behind on
	// the server once it returns.
	Read(ctx context.Context, r events.Range, fn func(*events.Record) error) (last uint64, err error)
	// Follow calls fn for every record from sequence from onwards, in
	// stream order, as they are stored, from one goroutine at a time, until
	// stop is called or ctx ends. fn must not keep the pointer. stop may be
	// called more than once; a call of fn in progress may still complete
	// after it returns.
	Follow(ctx context.Context, from uint64, fn func(*events.Record)) (stop func(), err error)
}

// KnownFollower is a Source whose Follow can take a record's event from
// the caller instead of decoding the message: for each message, known(seq)
// returns the event stored at seq if the caller holds it (this instance
// appended it and the acknowledgement confirmed it: Status.takeAcked), and
// the record then carries that event. The Runner follows through it when
// its Source is one.
type KnownFollower interface {
	// FollowKnown is Follow with known (nil: decode every message). An
	// event known returns for another connection than the message's
	// subject is not used: the message is decoded.
	FollowKnown(ctx context.Context, from uint64, known func(seq uint64) (domain.Event, bool), fn func(*events.Record)) (stop func(), err error)
}

// Checkpoints keeps a projection's durable state between runs: its latest
// snapshot and the stream position it was taken at, both under the
// projection's name.
type Checkpoints interface {
	// Position returns the position recorded for a projection (0: none).
	Position(ctx context.Context, name string) (uint64, error)
	// SetPosition records a projection's position.
	SetPosition(ctx context.Context, name string, pos uint64) error
	// OpenSnapshot opens a projection's latest snapshot, or returns nil
	// and no error when there is none. Reading it to EOF verifies its
	// integrity. The caller closes it.
	OpenSnapshot(ctx context.Context, name string) (io.ReadCloser, error)
	// PutSnapshot stores what r yields up to EOF as a projection's latest
	// snapshot (meta describes it), replacing the previous one.
	PutSnapshot(ctx context.Context, name string, meta map[string]string, r io.Reader) error
}

// connectionOfSubject returns the connection id of a message subject.
func connectionOfSubject(subject string) (string, bool) {
	id, ok := strings.CutPrefix(subject, events.SubjectPrefix)
	return id, ok && domain.ValidConnectionID(id)
}
