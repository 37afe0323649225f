package jsreq

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ParsePubAck reads a publish acknowledgement as jetstream's PublishMsg
// does. The form the server writes for a stored or de-duplicated message,
// {"stream":"<name>","seq":<n>} or with ,"duplicate": true, is read
// directly (with stream's string when the name is that); anything else
// (an error, a domain, a batch's fields, escapes) is left to encoding/json.
func ParsePubAck(data []byte, stream string) (*jetstream.PubAck, error) {
	if ack, ok := FastPubAck(data, stream); ok {
		return ack, nil
	}
	var r struct {
		Error *jetstream.APIError `json:"error,omitempty"`
		*jetstream.PubAck
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return nil, fmt.Errorf("nats: %w", r.Error)
	}
	if r.PubAck == nil || r.PubAck.Stream == "" {
		return nil, jetstream.ErrInvalidJSAck
	}
	return r.PubAck, nil
}

// FastPubAck reads {"stream":"<name>","seq":<n>} and the same with
// ,"duplicate": true (or without the space) before the brace; false for
// anything else.
func FastPubAck(data []byte, stream string) (*jetstream.PubAck, bool) {
	const head, seq = `{"stream":"`, `","seq":`
	if len(data) < len(head) || string(data[:len(head)]) != head {
		return nil, false
	}
	rest := data[len(head):]
	end := 0
	for end < len(rest) && rest[end] != '"' {
		if c := rest[end]; c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, false // an escape or a byte encoding/json would read otherwise
		}
		end++
	}
	name := rest[:end]
	rest = rest[end:]
	if len(name) == 0 || len(rest) < len(seq) || string(rest[:len(seq)]) != seq {
		return nil, false
	}
	rest = rest[len(seq):]
	var n uint64
	digits := 0
	for digits < len(rest) && '0' <= rest[digits] && rest[digits] <= '9' {
		if digits == 19 || (digits > 0 && rest[0] == '0') {
			return nil, false // long enough to overflow, or a leading zero
		}
		n = n*10 + uint64(rest[digits]-'0')
		digits++
	}
	if digits == 0 {
		return nil, false
	}
	ack := &jetstream.PubAck{Sequence: n}
	switch rest = rest[digits:]; string(rest) {
	case "}":
	case `,"duplicate": true}`, `,"duplicate":true}`: // the server writes the first
		ack.Duplicate = true
	default:
		return nil, false
	}
	if string(name) == stream {
		ack.Stream = stream
	} else {
		ack.Stream = string(name)
	}
	return ack, true
}
