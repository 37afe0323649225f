package events

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/tokenline/tokenline/domain"
)

// The per-connection hash chain.
//
// Every event the store appends carries, in the envelope's prevhash
// attribute, the hash of the connection's previous event in the chain:
// "sha256:" and the lowercase hex SHA-256 of that event's stored message
// bytes, exactly as they are in the stream. The first event of a connection
// carries GenesisHash. The chain is over the events the aggregate accepted
// (domain.Connection.Apply): an event that does not extend it (its prevhash
// is not the head) is refused by the projections and the event store's
// Load, and the next genuine event extends the head before it. An event
// without prevhash was written before the chain existed: it is accepted
// only while the connection has no chained event (the first chained event
// then links to the hash of the last of them).
//
// Altering a stored event changes its hash and breaks the link of the event
// after it; removing, inserting or reordering events breaks a link too. Who
// can write to the stream can still recompute a consistent chain: signed
// checkpoints (checkpoint.go) pin the heads so that a reader holding only
// the public key can prove the history up to the last checkpoint.

// HashPrefix starts every hash on the wire.
const HashPrefix = "sha256:"

// GenesisHash is the prevhash of a connection's first event: the zero hash.
var GenesisHash = FormatHash([32]byte{})

// HashOf returns the SHA-256 of a stored message.
func HashOf(b []byte) [32]byte { return sha256.Sum256(b) }

// FormatHash writes h as "sha256:<64 lowercase hex digits>".
func FormatHash(h [32]byte) string {
	var b [len(HashPrefix) + 64]byte
	copy(b[:], HashPrefix)
	hex.Encode(b[len(HashPrefix):], h[:])
	return string(b[:])
}

// ParseHash reads what FormatHash writes (lowercase hex only).
func ParseHash(s string) ([32]byte, bool) { return parseHashBytes([]byte(s)) }

func parseHashBytes(s []byte) ([32]byte, bool) {
	var h [32]byte
	if len(s) != len(HashPrefix)+64 || string(s[:len(HashPrefix)]) != HashPrefix {
		return h, false
	}
	for _, c := range s[len(HashPrefix):] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return h, false
		}
	}
	_, err := hex.Decode(h[:], s[len(HashPrefix):])
	return h, err == nil
}

// prevHash is the prevhash attribute Encode writes for a link.
func prevHash(l domain.ChainLink) string {
	if !l.Chained {
		return ""
	}
	return FormatHash(l.Prev)
}

// Chain links e to a connection's chain head: the link an appender sets
// before encoding (the event's own hash is known once it is encoded: set
// Link.Hash to HashOf of the encoded bytes).
func Chain(e *domain.Event, head domain.ChainHead) {
	e.Link = domain.ChainLink{Prev: head.Hash, Chained: true}
}
