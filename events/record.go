package events

import (
	"time"

	"github.com/tokenline/tokenline/domain"
)

// What a reader of the stream sees, shared by the stream's implementation
// (adapters/jsstore) and its readers (projections), which know nothing of
// each other.

// Record is one stored message of the event stream: its position, where it
// was stored, and the event it decodes to. Err is set (and Event zero) when
// the message does not decode or does not belong to its subject: readers
// count and skip such records, they never stop on them.
type Record struct {
	// Seq is the message's stream sequence.
	Seq uint64
	// Subject is the message's subject (Subject(connection id)).
	Subject string
	// Stored is when the server stored the message.
	Stored time.Time
	// Event is the decoded event, with Seq set.
	Event domain.Event
	// Err says why the message could not be decoded.
	Err error
}

// Range selects part of the stream for a read. The zero Range is the whole
// stream as it is when the read starts.
type Range struct {
	// From is the first sequence (0 or 1: the beginning).
	From uint64
	// To is the last sequence (0: the stream's last sequence when the read
	// starts).
	To uint64
	// ConnectionID limits the read to one connection's subject.
	ConnectionID string
	// StartTime, if set, starts at the first message stored at or after it
	// instead of at From.
	StartTime time.Time
}

// StreamInfo identifies the stream and says how far it goes.
type StreamInfo struct {
	// Name is the stream's name.
	Name string
	// Created is when the stream was created: a stream deleted and created
	// again under the same name has another.
	Created time.Time
	// LastSeq is the sequence of the last message (0: empty).
	LastSeq uint64
}
