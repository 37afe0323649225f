// Package events is the wire schema of tokenline's events: CloudEvents 1.0 in
// structured JSON mode, one message per event on the subject
// tokenline.conn.<connection-id> of the TOKENLINE stream.
//
// An envelope looks like this (a refresh that failed terminally):
//
//	{
//	  "specversion": "1.0",
//	  "id": "4b0f3c1e-8d0e-4c43-9d1b-0d4f6b2f7a10",
//	  "source": "/tokenline/instances/api-1",
//	  "type": "tokenline.refresh.failed",
//	  "subject": "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d",
//	  "time": "2026-11-28T10:02:13.412Z",
//	  "datacontenttype": "application/json",
//	  "schemaversion": 2,
//	  "actor": "instance/api-1",
//	  "data": {"terminal": true, "class": "terminal", "error_code": "invalid_grant",
//	           "http_status": 400, "attempt": 1, "reason": "invalid_grant"}
//	}
//
// Versioning: every event type has a current schema version (CurrentVersion).
// Encode always writes the current version. Decode reads every version ever
// written: older versions are upcast to the current shape, so an event written
// today is still read after the schema changes. An unknown type or a version
// newer than this build knows decodes to a typed error (ErrUnknownType,
// ErrUnsupportedVersion), never a panic; anything else that does not parse is
// ErrMalformed.
//
// No event carries a token, client secret, PKCE verifier or state value:
// tokens appear only as fingerprints (domain.Fingerprint) with expiry times
// and scopes.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Wire constants.
const (
	SpecVersion     = "1.0"
	TypePrefix      = "tokenline."
	ContentType     = "application/cloudevents+json"
	DataContentType = "application/json"
	// SubjectPrefix is the prefix of every connection subject.
	SubjectPrefix = "tokenline.conn."
	// SubjectAll matches every connection subject.
	SubjectAll = SubjectPrefix + ">"
	// MaxEventSize bounds what Decode accepts.
	MaxEventSize = 64 << 10
)

// Subject returns the NATS subject of a connection.
func Subject(connectionID string) string { return SubjectPrefix + connectionID }

// Errors returned by Decode. Concrete errors wrap them.
var (
	ErrMalformed          = errors.New("events: malformed event")
	ErrUnknownType        = errors.New("events: unknown event type")
	ErrUnsupportedVersion = errors.New("events: unsupported schema version")
)

// DecodeError says what is wrong with an event, without echoing its payload.
type DecodeError struct {
	Kind    error // ErrMalformed, ErrUnknownType or ErrUnsupportedVersion
	Type    string
	Version int
	Detail  string
}

func (e *DecodeError) Error() string {
	switch e.Kind {
	case ErrUnknownType:
		return fmt.Sprintf("events: unknown event type %q", e.Type)
	case ErrUnsupportedVersion:
		return fmt.Sprintf("events: %s schema version %d is not supported (this build reads up to %d)", e.Type, e.Version, CurrentVersion[domain.EventType(e.Type)])
	}
	return "events: malformed event: " + e.Detail
}

func (e *DecodeError) Unwrap() error { return e.Kind }

// CurrentVersion is the schema version Encode writes for each type.
//
// History:
//   - envelope: the prevhash extension attribute (the per-connection hash
//     chain, see chain.go) was added without changing any type's version:
//     it is optional, and an envelope without it is an event written
//     before the chain (accepted only before a connection's first chained
//     event, reported by verify as "before the chain").
//   - refresh.failed v1 (draft): {"terminal", "code", "status"}; v2 renamed
//     code→error_code and status→http_status and added class, attempt,
//     reason and retry_at. v1 is upcast on read.
//   - refresh.lease_extended v1: {"lease_until"}, added as a new type
//     (readers that predate it fail on it with ErrUnknownType).
var CurrentVersion = map[domain.EventType]int{
	domain.EventConnectionCreated:      1,
	domain.EventAuthorisationStarted:   1,
	domain.EventAuthorisationCompleted: 1,
	domain.EventAuthorisationFailed:    1,
	domain.EventRefreshStarted:         1,
	domain.EventRefreshSucceeded:       1,
	domain.EventRefreshFailed:          2,
	domain.EventAccessRejected:         1,
	domain.EventTokensInvalidated:      1,
	domain.EventConnectionUpdated:      1,
	domain.EventConnectionDeleted:      1,
	domain.EventRefreshLeaseExtended:   1,
}

// Envelope is the CloudEvents structured-mode JSON envelope.
type Envelope struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	SchemaVersion   int       `json:"schemaversion"`
	Actor           string    `json:"actor,omitempty"`
	// PrevHash is the hash-chain link (CloudEvents extension attribute):
	// "sha256:<hex>" of the stored bytes of the connection's previous
	// event in the chain, GenesisHash for the first. Empty: written before
	// the chain (see ChainLink).
	PrevHash string          `json:"prevhash,omitempty"`
	Data     json.RawMessage `json:"data"`
}

// Source is the CloudEvents source written by Encode when the event's actor
// does not name one.
var Source = "/tokenline"

// jsonNull is the placeholder data Encode marshals and then splices over.
var jsonNull = json.RawMessage("null")

// Encode writes e as a CloudEvents JSON envelope at the current version.
func Encode(e domain.Event) ([]byte, error) {
	return AppendEncode(make([]byte, 0, 1024), &e)
}

// AppendEncode is Encode appending to dst (the store's append path reuses
// its buffer); it returns dst extended by the bytes Encode returns, or an
// error and dst's contents unspecified beyond len(dst).
func AppendEncode(dst []byte, e *domain.Event) ([]byte, error) {
	if e.Payload == nil {
		return dst, errors.New("events: encode: event has no payload")
	}
	t := e.Payload.EventType()
	v, ok := CurrentVersion[t]
	if !ok {
		return dst, fmt.Errorf("events: encode: unknown event type %q", t)
	}
	if e.ID == "" || !domain.ValidConnectionID(e.ConnectionID) {
		return dst, errors.New("events: encode: event id and a valid connection id are required")
	}
	n := len(dst)
	b, err := appendEnvelope(dst, e, t, v)
	if err != nil {
		// A payload or a time the fast encoder leaves to encoding/json.
		r, err := encodeReflect(*e, t, v)
		if err != nil {
			return dst[:n], err
		}
		return append(b[:n], r...), nil
	}
	if len(b)-n > MaxEventSize {
		// Decode refuses it: storing it would write a message no reader can read.
		return b[:n], fmt.Errorf("events: encode %s: event is %d bytes, more than %d: %w", t, len(b)-n, MaxEventSize, domain.ErrInvalidCommand)
	}
	return b, nil
}

// encodeReflect is Encode by encoding/json (reflection): what the fast
// encoder (encode_fast.go) must match byte for byte, and its fallback.
func encodeReflect(e domain.Event, t domain.EventType, v int) ([]byte, error) {
	data, err := json.Marshal(e.Payload)
	if err != nil {
		return nil, fmt.Errorf("events: encode %s: %w", t, err)
	}
	src := Source
	if e.Actor != "" {
		src = Source + "/" + e.Actor
	}
	// The envelope is marshalled with null data and the (already valid)
	// data is spliced in for the null: encoding/json would otherwise
	// re-validate and compact a json.RawMessage, almost half the cost of
	// Encode.
	head, err := json.Marshal(Envelope{
		SpecVersion:     SpecVersion,
		ID:              e.ID,
		Source:          src,
		Type:            TypePrefix + string(t),
		Subject:         e.ConnectionID,
		Time:            e.Time.UTC(),
		DataContentType: DataContentType,
		SchemaVersion:   v,
		Actor:           e.Actor,
		PrevHash:        prevHash(e.Link),
		Data:            jsonNull,
	})
	var b []byte
	if err == nil {
		head = head[:len(head)-len("null}")]
		b = make([]byte, 0, len(head)+len(data)+1)
		b = append(append(append(b, head...), data...), '}')
	}
	if err == nil && len(b) > MaxEventSize {
		// Decode refuses it: storing it would write a message no reader can read.
		return nil, fmt.Errorf("events: encode %s: event is %d bytes, more than %d: %w", t, len(b), MaxEventSize, domain.ErrInvalidCommand)
	}
	return b, err
}

func malformed(detail string) error { return &DecodeError{Kind: ErrMalformed, Detail: detail} }

// Decode reads one envelope. Seq is left 0; the store sets it.
func Decode(b []byte) (domain.Event, error) {
	var env Envelope
	if len(b) > MaxEventSize {
		return domain.Event{}, malformed("too large")
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return domain.Event{}, malformed("envelope is not valid JSON")
	}
	e, err := DecodeEnvelope(env)
	if err == nil {
		e.Link.Hash = HashOf(b)
	}
	return e, err
}

// DecodeEnvelope reads an already parsed envelope. The event's own hash
// (Link.Hash) is left zero: only Decode has the stored bytes.
func DecodeEnvelope(env Envelope) (domain.Event, error) {
	if env.SpecVersion != SpecVersion {
		return domain.Event{}, malformed("specversion must be 1.0")
	}
	if env.ID == "" || len(env.ID) > 128 {
		return domain.Event{}, malformed("missing id")
	}
	if !domain.ValidConnectionID(env.Subject) {
		return domain.Event{}, malformed("subject is not a connection id")
	}
	if env.Time.IsZero() {
		return domain.Event{}, malformed("missing time")
	}
	if y := env.Time.UTC().Year(); y < 0 || y > 9999 {
		// Encode writes the time in UTC and cannot write such a year.
		return domain.Event{}, malformed("time out of range")
	}
	if len(env.Type) <= len(TypePrefix) || env.Type[:len(TypePrefix)] != TypePrefix {
		return domain.Event{}, &DecodeError{Kind: ErrUnknownType, Type: truncateType(env.Type)}
	}
	t := domain.EventType(env.Type[len(TypePrefix):])
	cur, ok := CurrentVersion[t]
	if !ok {
		return domain.Event{}, &DecodeError{Kind: ErrUnknownType, Type: truncateType(env.Type)}
	}
	if env.SchemaVersion < 1 || env.SchemaVersion > cur {
		return domain.Event{}, &DecodeError{Kind: ErrUnsupportedVersion, Type: string(t), Version: env.SchemaVersion}
	}
	data := env.Data
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		data = []byte("{}")
	}
	p, err := decodeData(t, env.SchemaVersion, data)
	if err != nil {
		return domain.Event{}, err
	}
	e := domain.Event{ID: env.ID, ConnectionID: env.Subject, Time: env.Time, Actor: env.Actor, Payload: p}
	if env.PrevHash != "" {
		h, ok := ParseHash(env.PrevHash)
		if !ok {
			return domain.Event{}, malformed(`prevhash is not "sha256:" and 64 hex digits`)
		}
		e.Link.Prev, e.Link.Chained = h, true
	}
	return e, nil
}

func unmarshal[T any](data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, malformed("data does not match the schema")
	}
	return v, nil
}

func decodeData(t domain.EventType, version int, data []byte) (domain.Payload, error) {
	var (
		p   domain.Payload
		err error
	)
	switch t {
	case domain.EventConnectionCreated:
		p, err = unmarshal[domain.ConnectionCreated](data)
	case domain.EventAuthorisationStarted:
		p, err = unmarshal[domain.AuthorisationStarted](data)
	case domain.EventAuthorisationCompleted:
		p, err = unmarshal[domain.AuthorisationCompleted](data)
	case domain.EventAuthorisationFailed:
		p, err = unmarshal[domain.AuthorisationFailed](data)
	case domain.EventRefreshStarted:
		p, err = unmarshal[domain.RefreshStarted](data)
	case domain.EventRefreshSucceeded:
		p, err = unmarshal[domain.RefreshSucceeded](data)
	case domain.EventRefreshFailed:
		if version == 1 {
			p, err = upcastRefreshFailedV1(data)
		} else {
			p, err = unmarshal[domain.RefreshFailed](data)
		}
	case domain.EventRefreshLeaseExtended:
		p, err = unmarshal[domain.RefreshLeaseExtended](data)
	case domain.EventAccessRejected:
		p, err = unmarshal[domain.AccessRejected](data)
	case domain.EventTokensInvalidated:
		p, err = unmarshal[domain.TokensInvalidated](data)
	case domain.EventConnectionUpdated:
		p, err = unmarshal[domain.ConnectionUpdated](data)
	case domain.EventConnectionDeleted:
		p, err = unmarshal[domain.ConnectionDeleted](data)
	default:
		return nil, &DecodeError{Kind: ErrUnknownType, Type: TypePrefix + string(t)}
	}
	if err != nil {
		return nil, err
	}
	if err := validate(p); err != nil {
		return nil, err
	}
	return p, nil
}

// refreshFailedV1 is the draft shape of refresh.failed.
type refreshFailedV1 struct {
	Terminal bool   `json:"terminal"`
	Code     string `json:"code"`
	Status   int    `json:"status"`
}

// upcastRefreshFailedV1 maps the v1 shape onto v2: the attempt number was
// not recorded in v1 and is read as 1; the reason of a terminal failure is
// derived from the error code as v2 does.
func upcastRefreshFailedV1(data []byte) (domain.Payload, error) {
	v1, err := unmarshal[refreshFailedV1](data)
	if err != nil {
		return nil, err
	}
	out := domain.RefreshFailed{Terminal: v1.Terminal, ErrorCode: v1.Code, HTTPStatus: v1.Status, Attempt: 1, Class: "transient"}
	if v1.Terminal {
		out.Class = "terminal"
		out.Reason = domain.ReasonForErrorCode(v1.Code)
	}
	return out, nil
}

// validate checks what the schema promises beyond JSON types: reasons belong
// to the closed set where a transition needs one.
func validate(p domain.Payload) error {
	switch d := p.(type) {
	case domain.ConnectionCreated:
		if d.Provider == "" {
			return malformed("connection.created without provider")
		}
	case domain.AuthorisationFailed:
		if !d.Reason.Valid() {
			return malformed("authorisation.failed with an unknown reason")
		}
	case domain.RefreshLeaseExtended:
		if d.LeaseUntil.IsZero() {
			return malformed("refresh.lease_extended without lease_until")
		}
	case domain.RefreshFailed:
		if d.Terminal && !d.Reason.Valid() {
			return malformed("terminal refresh.failed with an unknown reason")
		}
	case domain.AccessRejected:
		if d.Terminal && !d.Reason.Valid() {
			return malformed("terminal access.rejected with an unknown reason")
		}
	}
	return nil
}

// truncateType bounds a foreign type name before it goes into an error
// (and so into logs).
func truncateType(t string) string {
	if len(t) > 80 {
		return t[:80] + "..."
	}
	return t
}
