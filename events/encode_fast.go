package events

import (
	"errors"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tokenline/tokenline/domain"
)

// The append path encodes every event it writes. encoding/json finds the
// fields of the envelope and of the payload by reflection on every call,
// which cost about 15 % of an append's CPU; the functions below write the
// same bytes directly. They must produce exactly what encoding/json
// produces (field order, omitempty and omitzero, HTML-safe string
// escaping, sorted map keys, RFC 3339 times), so that an event's bytes,
// and so its hash in the chain, do not depend on which encoder wrote it:
// TestFastEncoderMatchesJSON compares the two for every event type.
// Anything the fast encoder does not handle exactly (a payload type it
// does not know, a time encoding/json refuses) is left to encoding/json
// (errFallback).

var errFallback = errors.New("events: not encoded by the fast encoder")

// appendEnvelope appends the envelope of e with its data to b.
func appendEnvelope(b []byte, e *domain.Event, t domain.EventType, version int) ([]byte, error) {
	b = append(b, `{"specversion":"`+SpecVersion+`","id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	if e.Actor != "" {
		b = appendString2(b, Source+"/", e.Actor)
	} else {
		b = appendString(b, Source)
	}
	b = append(b, `,"type":`...)
	b = appendString2(b, TypePrefix, string(t))
	b = append(b, `,"subject":`...)
	b = appendString(b, e.ConnectionID)
	b = append(b, `,"time":`...)
	b, ok := appendTime(b, e.Time.UTC())
	if !ok {
		return b, errFallback
	}
	b = append(b, `,"datacontenttype":"`+DataContentType+`","schemaversion":`...)
	b = strconv.AppendInt(b, int64(version), 10)
	if e.Actor != "" {
		b = append(b, `,"actor":`...)
		b = appendString(b, e.Actor)
	}
	if e.Link.Chained {
		b = append(b, `,"prevhash":"`+HashPrefix...)
		b = appendHex(b, e.Link.Prev[:])
		b = append(b, '"')
	}
	b = append(b, `,"data":`...)
	b, err := appendPayload(b, e.Payload)
	if err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// appendPayload appends p as encoding/json marshals it.
func appendPayload(b []byte, p domain.Payload) ([]byte, error) {
	ok := true
	switch d := p.(type) {
	case domain.ConnectionCreated:
		b = append(b, `{"provider":`...)
		b = appendString(b, d.Provider)
		b = append(b, `,"scopes":`...)
		b = appendStrings(b, d.Scopes)
		if len(d.Config) > 0 {
			b = append(b, `,"config":`...)
			b = appendMap(b, d.Config)
		}
		b = append(b, '}')
	case domain.AuthorisationStarted:
		b = append(b, `{"attempt_id":`...)
		b = appendString(b, d.AttemptID)
		b = append(b, `,"scopes":`...)
		b = appendStrings(b, d.Scopes)
		b = append(b, `,"expires_at":`...)
		b, ok = appendTime(b, d.ExpiresAt)
		b = append(b, '}')
	case domain.AuthorisationCompleted:
		b = append(b, `{"attempt_id":`...)
		b = appendString(b, d.AttemptID)
		b = append(b, `,"tokens":`...)
		b, ok = appendTokenInfo(b, &d.Tokens)
		b = append(b, '}')
	case domain.AuthorisationFailed:
		b = append(b, `{"attempt_id":`...)
		b = appendString(b, d.AttemptID)
		b = append(b, `,"reason":`...)
		b = appendString(b, string(d.Reason))
		if d.ErrorCode != "" {
			b = append(b, `,"error_code":`...)
			b = appendString(b, d.ErrorCode)
		}
		if d.Description != "" {
			b = append(b, `,"error_description":`...)
			b = appendString(b, d.Description)
		}
		b = append(b, '}')
	case domain.RefreshStarted:
		b = append(b, `{"attempt":`...)
		b = strconv.AppendInt(b, int64(d.Attempt), 10)
		b = append(b, `,"lease_until":`...)
		b, ok = appendTime(b, d.LeaseUntil)
		b = append(b, `,"trigger":`...)
		b = appendString(b, d.Trigger)
		if d.RefreshTokenFP != "" {
			b = append(b, `,"refresh_token_fp":`...)
			b = appendString(b, d.RefreshTokenFP)
		}
		b = append(b, '}')
	case domain.RefreshSucceeded:
		b = append(b, `{"attempt":`...)
		b = strconv.AppendInt(b, int64(d.Attempt), 10)
		b = append(b, `,"tokens":`...)
		b, ok = appendTokenInfo(b, &d.Tokens)
		b = append(b, `,"rotated":`...)
		b = strconv.AppendBool(b, d.Rotated)
		b = append(b, '}')
	case domain.RefreshFailed:
		b = append(b, `{"terminal":`...)
		b = strconv.AppendBool(b, d.Terminal)
		b = append(b, `,"class":`...)
		b = appendString(b, d.Class)
		if d.ErrorCode != "" {
			b = append(b, `,"error_code":`...)
			b = appendString(b, d.ErrorCode)
		}
		if d.HTTPStatus != 0 {
			b = append(b, `,"http_status":`...)
			b = strconv.AppendInt(b, int64(d.HTTPStatus), 10)
		}
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(d.Attempt), 10)
		if d.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendString(b, string(d.Reason))
		}
		if !d.RetryAt.IsZero() {
			b = append(b, `,"retry_at":`...)
			b, ok = appendTime(b, d.RetryAt)
		}
		b = append(b, '}')
	case domain.RefreshLeaseExtended:
		b = append(b, `{"lease_until":`...)
		b, ok = appendTime(b, d.LeaseUntil)
		b = append(b, '}')
	case domain.AccessRejected:
		b = append(b, `{"http_status":`...)
		b = strconv.AppendInt(b, int64(d.HTTPStatus), 10)
		if d.ErrorCode != "" {
			b = append(b, `,"error_code":`...)
			b = appendString(b, d.ErrorCode)
		}
		if d.Scope != "" {
			b = append(b, `,"scope":`...)
			b = appendString(b, d.Scope)
		}
		if d.AccessTokenFP != "" {
			b = append(b, `,"access_token_fp":`...)
			b = appendString(b, d.AccessTokenFP)
		}
		b = append(b, `,"terminal":`...)
		b = strconv.AppendBool(b, d.Terminal)
		if d.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendString(b, string(d.Reason))
		}
		b = append(b, '}')
	case domain.TokensInvalidated:
		b = append(b, '{')
		if d.Reason != "" {
			b = append(b, `"reason":`...)
			b = appendString(b, string(d.Reason))
			b = append(b, ',')
		}
		if d.AccessTokenFP != "" {
			b = append(b, `"access_token_fp":`...)
			b = appendString(b, d.AccessTokenFP)
			b = append(b, ',')
		}
		if d.RefreshTokenFP != "" {
			b = append(b, `"refresh_token_fp":`...)
			b = appendString(b, d.RefreshTokenFP)
			b = append(b, ',')
		}
		b = append(b, `"provider_revoked":`...)
		b = strconv.AppendBool(b, d.ProviderRevoked)
		b = append(b, '}')
	case domain.ConnectionUpdated:
		b = append(b, `{"scopes":`...)
		b = appendStrings(b, d.Scopes)
		b = append(b, `,"config":`...)
		if d.Config == nil {
			b = append(b, "null"...)
		} else {
			b = appendMap(b, d.Config)
		}
		b = append(b, '}')
	case domain.ConnectionDeleted:
		b = append(b, "{}"...)
	default:
		return b, errFallback
	}
	if !ok {
		return b, errFallback
	}
	return b, nil
}

func appendTokenInfo(b []byte, t *domain.TokenInfo) ([]byte, bool) {
	ok := true
	b = append(b, '{')
	n := len(b)
	if t.AccessTokenFP != "" {
		b = append(b, `"access_token_fp":`...)
		b = appendString(b, t.AccessTokenFP)
	}
	if t.RefreshTokenFP != "" {
		b = appendComma(b, n)
		b = append(b, `"refresh_token_fp":`...)
		b = appendString(b, t.RefreshTokenFP)
	}
	if !t.AccessTokenExpiresAt.IsZero() {
		b = appendComma(b, n)
		b = append(b, `"access_token_expires_at":`...)
		b, ok = appendTime(b, t.AccessTokenExpiresAt)
	}
	if len(t.Scopes) > 0 {
		b = appendComma(b, n)
		b = append(b, `"scopes":`...)
		b = appendStrings(b, t.Scopes)
	}
	return append(b, '}'), ok
}

// appendComma separates a field from the one before it, if the object
// (whose first field starts at n) has one.
func appendComma(b []byte, n int) []byte {
	if len(b) > n {
		return append(b, ',')
	}
	return b
}

// appendTime appends t as time.Time.MarshalJSON does; false for a time it
// refuses (a year outside [0,9999], a zone offset of 24 hours or more).
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	if len(b)-n0 < len("2006-01-02T15:04:05Z") || b[n0+len("9999")] != '-' {
		return b, false
	}
	if b[len(b)-1] != 'Z' {
		c := b[len(b)-len("Z07:00")]
		h := b[len(b)-len("07:00"):]
		if ('0' <= c && c <= '9') || 10*(h[0]-'0')+(h[1]-'0') >= 24 {
			return b, false
		}
	}
	return append(b, '"'), true
}

func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendMap appends m with its keys sorted, as encoding/json does.
func appendMap(b []byte, m map[string]string) []byte {
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

func appendHex(b []byte, p []byte) []byte {
	for _, c := range p {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xF])
	}
	return b
}

// appendString2 appends the JSON string of a+s without building it.
func appendString2(b []byte, a, s string) []byte {
	if a != "" && a[len(a)-1] >= utf8.RuneSelf {
		return appendString(b, a+s) // a may end inside a UTF-8 sequence that s completes
	}
	b = append(b, '"')
	b = appendStringBody(b, a)
	b = appendStringBody(b, s)
	return append(b, '"')
}

// appendString appends s as a JSON string exactly as encoding/json writes
// it (HTML-safe: <, > and & escaped; invalid UTF-8 as U+FFFD; U+2028 and
// U+2029 escaped).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendStringBody(b, s)
	return append(b, '"')
}

func appendStringBody(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
