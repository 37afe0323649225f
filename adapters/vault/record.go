package vault

import (
	"bytes"
	"encoding/json"
	"time"
)

// The plaintext of a token set is the JSON of record. Every refresh writes
// one and reads one on its critical path, where encoding/json took about
// 3 us to write it and 10 us to read it (reflection, the validity scan,
// time.Time's own methods). appendRecord and parseRecord do the same for
// the records tokenline writes, whose strings are plain printable ASCII,
// and give everything else to encoding/json: appendRecord's output is
// byte for byte json.Marshal's, and parseRecord accepts only what
// json.Unmarshal reads to the same record (both checked by
// TestRecordCodecMatchesEncodingJSON and FuzzParseRecord).

// marshalRecord is json.Marshal(r).
func marshalRecord(r *record) ([]byte, error) {
	if b, ok := appendRecord(make([]byte, 0, 128+len(r.AccessToken)+len(r.RefreshToken)), r); ok {
		return b, nil
	}
	return json.Marshal(r)
}

// unmarshalRecord is json.Unmarshal(data, r) for a zero r.
func unmarshalRecord(data []byte, r *record) error {
	if parseRecord(data, r) {
		return nil
	}
	*r = record{}
	return json.Unmarshal(data, r)
}

// plain reports whether encoding/json writes s as it is between quotes,
// and reads it back so: printable ASCII without '"', '\\' and the
// characters it escapes for HTML ('<', '>', '&').
func plain[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// appendRecord appends json.Marshal(r)'s output, or reports false when a
// string is not plain or the expiry is one encoding/json refuses.
func appendRecord(b []byte, r *record) ([]byte, bool) {
	b = append(b, '{')
	first := true
	field := func(name string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
	}
	str := func(name, v string) bool {
		if v == "" {
			return true
		}
		if !plain(v) {
			return false
		}
		field(name)
		b = append(b, '"')
		b = append(b, v...)
		b = append(b, '"')
		return true
	}
	if !str("access_token", r.AccessToken) || !str("refresh_token", r.RefreshToken) || !str("token_type", r.TokenType) {
		return nil, false
	}
	if !r.Expiry.IsZero() {
		if y := r.Expiry.Year(); y < 0 || y > 9999 {
			return nil, false // json.Marshal refuses it
		}
		if _, off := r.Expiry.Zone(); off != 0 {
			return nil, false // Put writes UTC; others go the long way
		}
		field("expiry")
		b = append(b, '"')
		b = r.Expiry.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if len(r.Scopes) > 0 {
		field("scopes")
		b = append(b, '[')
		for i, s := range r.Scopes {
			if !plain(s) {
				return nil, false
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = append(b, s...)
			b = append(b, '"')
		}
		b = append(b, ']')
	}
	return append(b, '}'), true
}

// parseRecord reads what appendRecord writes (the fields in its order,
// each at most once, no spaces, plain strings) into the zero record r, or
// reports false (r then holds a part of it).
func parseRecord(data []byte, r *record) bool {
	p := data
	// str reads a plain string and the quote after it.
	str := func() ([]byte, bool) {
		if len(p) == 0 || p[0] != '"' {
			return nil, false
		}
		end := bytes.IndexByte(p[1:], '"')
		if end < 0 {
			return nil, false
		}
		s := p[1 : 1+end]
		if !plain(s) {
			return nil, false
		}
		p = p[2+end:]
		return s, true
	}
	if len(p) < 2 || p[0] != '{' {
		return false
	}
	p = p[1:]
	if p[0] == '}' {
		return len(p) == 1
	}
	const (
		fAccess = iota
		fRefresh
		fType
		fExpiry
		fScopes
	)
	next := fAccess // the fields come in this order, each once
	for {
		name, ok := str()
		if !ok || len(p) == 0 || p[0] != ':' {
			return false
		}
		p = p[1:]
		var f int
		switch string(name) {
		case "access_token":
			f = fAccess
		case "refresh_token":
			f = fRefresh
		case "token_type":
			f = fType
		case "expiry":
			f = fExpiry
		case "scopes":
			f = fScopes
		default:
			return false
		}
		if f < next {
			return false
		}
		next = f + 1
		switch f {
		case fAccess, fRefresh, fType:
			v, ok := str()
			if !ok || len(v) == 0 {
				return false // an empty string is omitted when written
			}
			switch f {
			case fAccess:
				r.AccessToken = string(v)
			case fRefresh:
				r.RefreshToken = string(v)
			default:
				r.TokenType = string(v)
			}
		case fExpiry:
			start := p
			if _, ok := str(); !ok {
				return false
			}
			if err := r.Expiry.UnmarshalJSON(start[:len(start)-len(p)]); err != nil {
				return false
			}
		case fScopes:
			if len(p) < 2 || p[0] != '[' || p[1] == ']' {
				return false // an empty list is omitted when written
			}
			p = p[1:]
			for {
				v, ok := str()
				if !ok || len(p) == 0 {
					return false
				}
				r.Scopes = append(r.Scopes, string(v))
				if p[0] == ']' {
					p = p[1:]
					break
				}
				if p[0] != ',' {
					return false
				}
				p = p[1:]
			}
		}
		if len(p) == 0 {
			return false
		}
		switch p[0] {
		case '}':
			return len(p) == 1
		case ',':
			p = p[1:]
		default:
			return false
		}
	}
}
