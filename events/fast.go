package events

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokenline/tokenline/domain"
)

// Decoder decodes event messages exactly as Decode does, faster for the
// canonical form Encode writes. Readers of the stream that decode many
// events (projection rebuilds, audit scans) keep one Decoder per goroutine.
//
// Decode goes through encoding/json; rebuilding a projection from a million
// events would spend most of its time there. A Decoder first tries a
// hand-written parser that accepts only the canonical form (known keys in
// Encode's order, no escapes, integers without sign, fraction or exponent,
// the current schema version) and builds the same domain.Event; anything
// else, including every error, falls back to Decode, which stays the single
// authority on what is valid and how older versions are upcast. The fast
// path is switched off for an event type whose schema version or Go fields
// (JSON names) differ from what it knows (fastTypes). Tests check that both
// decoders agree on every event type and on fuzzed input
// (TestFastDecodeAgrees, FuzzFastDecode); BenchmarkDecoder measures the gain.
//
// A Decoder also shares the strings that repeat across events (actors,
// providers, scopes, reasons, error codes), so the projections built from
// its events hold fewer copies. The zero value is ready to use; a Decoder
// must not be used by two goroutines at once.
type Decoder struct {
	in interner
}

// Decode decodes one message body as the package-level Decode does.
func (d *Decoder) Decode(b []byte) (domain.Event, error) {
	if e, ok := fastDecodeWith(b, &d.in); ok {
		return e, nil
	}
	return Decode(b)
}

type payloadDecoder struct {
	version int
	keys    []string
	decode  func(p *parser) (domain.Payload, bool)
}

// fastTypes holds, for each event type, the decoder of its current schema
// version; types whose Go shape no longer matches the decoder are left out.
var fastTypes = func() map[domain.EventType]payloadDecoder {
	known := map[domain.EventType]payloadDecoder{
		domain.EventConnectionCreated:      {1, []string{"provider", "scopes", "config"}, decConnectionCreated},
		domain.EventAuthorisationStarted:   {1, []string{"attempt_id", "scopes", "expires_at"}, decAuthorisationStarted},
		domain.EventAuthorisationCompleted: {1, []string{"attempt_id", "tokens"}, decAuthorisationCompleted},
		domain.EventAuthorisationFailed:    {1, []string{"attempt_id", "reason", "error_code", "error_description"}, decAuthorisationFailed},
		domain.EventRefreshStarted:         {1, []string{"attempt", "lease_until", "trigger", "refresh_token_fp"}, decRefreshStarted},
		domain.EventRefreshSucceeded:       {1, []string{"attempt", "tokens", "rotated"}, decRefreshSucceeded},
		domain.EventRefreshFailed:          {2, []string{"terminal", "class", "error_code", "http_status", "attempt", "reason", "retry_at"}, decRefreshFailed},
		domain.EventAccessRejected:         {1, []string{"http_status", "error_code", "scope", "access_token_fp", "terminal", "reason"}, decAccessRejected},
		domain.EventTokensInvalidated:      {1, []string{"reason", "access_token_fp", "refresh_token_fp", "provider_revoked"}, decTokensInvalidated},
		domain.EventConnectionUpdated:      {1, []string{"scopes", "config"}, decConnectionUpdated},
		domain.EventConnectionDeleted:      {1, nil, decConnectionDeleted},
		domain.EventRefreshLeaseExtended:   {1, []string{"lease_until"}, decRefreshLeaseExtended},
	}
	samples := map[domain.EventType]domain.Payload{
		domain.EventConnectionCreated: domain.ConnectionCreated{}, domain.EventAuthorisationStarted: domain.AuthorisationStarted{},
		domain.EventAuthorisationCompleted: domain.AuthorisationCompleted{}, domain.EventAuthorisationFailed: domain.AuthorisationFailed{},
		domain.EventRefreshStarted: domain.RefreshStarted{}, domain.EventRefreshSucceeded: domain.RefreshSucceeded{},
		domain.EventRefreshFailed: domain.RefreshFailed{}, domain.EventAccessRejected: domain.AccessRejected{},
		domain.EventTokensInvalidated: domain.TokensInvalidated{}, domain.EventConnectionUpdated: domain.ConnectionUpdated{},
		domain.EventConnectionDeleted: domain.ConnectionDeleted{}, domain.EventRefreshLeaseExtended: domain.RefreshLeaseExtended{},
	}
	tokensOK := sameKeys(reflect.TypeOf(domain.TokenInfo{}), tokenInfoKeys)
	out := map[domain.EventType]payloadDecoder{}
	for t, d := range known {
		p, ok := samples[t]
		if !ok || CurrentVersion[t] != d.version || !sameKeys(reflect.TypeOf(p), d.keys) {
			continue
		}
		if !tokensOK && (t == domain.EventAuthorisationCompleted || t == domain.EventRefreshSucceeded) {
			continue
		}
		out[t] = d
	}
	return out
}()

var tokenInfoKeys = []string{"access_token_fp", "refresh_token_fp", "access_token_expires_at", "scopes"}

// sameKeys reports whether the JSON names of t's fields are exactly keys.
func sameKeys(t reflect.Type, keys []string) bool {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	a, b := slices.Clone(names), slices.Clone(keys)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// fastDecodeWith decodes the canonical form, sharing strings through in
// (nil: none); ok is false for anything else.
func fastDecodeWith(b []byte, in *interner) (domain.Event, bool) {
	if len(b) > MaxEventSize {
		return domain.Event{}, false
	}
	p := parser{b: b, in: in}
	var (
		e                domain.Event
		spec, typ        []byte
		version          int
		dec              payloadDecoder
		haveData, okType bool
	)
	ok := p.object(func(key []byte) bool {
		switch string(key) {
		case "specversion":
			var ok bool
			spec, ok = p.rawStr()
			return ok
		case "id":
			var ok bool
			e.ID, ok = p.str()
			return ok
		case "source", "datacontenttype":
			return p.skipStr()
		case "type":
			var ok bool
			typ, ok = p.rawStr()
			return ok
		case "subject":
			var ok bool
			e.ConnectionID, ok = p.str()
			return ok
		case "time":
			var ok bool
			e.Time, ok = p.time()
			return ok
		case "schemaversion":
			var ok bool
			version, ok = p.int()
			return ok
		case "actor":
			var ok bool
			e.Actor, ok = p.sym()
			return ok
		case "prevhash":
			raw, ok := p.rawStr()
			if ok {
				e.Link.Prev, ok = parseHashBytes(raw)
				e.Link.Chained = true
			}
			return ok
		case "data":
			// The canonical form writes type and schemaversion first.
			if !bytes.HasPrefix(typ, []byte(TypePrefix)) {
				return false
			}
			dec, okType = fastTypes[domain.EventType(typ[len(TypePrefix):])]
			if !okType || version != dec.version {
				return false
			}
			var ok bool
			e.Payload, ok = dec.decode(&p)
			haveData = ok
			return ok
		}
		return false
	}, 11)
	if !ok || !p.end() || !haveData {
		return domain.Event{}, false
	}
	if string(spec) != SpecVersion || e.ID == "" || len(e.ID) > 128 || !domain.ValidConnectionID(e.ConnectionID) || e.Time.IsZero() {
		return domain.Event{}, false
	}
	if y := e.Time.UTC().Year(); y < 0 || y > 9999 { // as Decode: a time it could not re-encode
		return domain.Event{}, false
	}
	if !validPayload(e.Payload) {
		return domain.Event{}, false
	}
	e.Link.Hash = HashOf(b)
	return e, true
}

// validPayload repeats the checks Decode makes beyond JSON types; on
// failure the fallback produces the error.
func validPayload(p domain.Payload) bool {
	switch d := p.(type) {
	case domain.ConnectionCreated:
		return d.Provider != ""
	case domain.AuthorisationFailed:
		return d.Reason.Valid()
	case domain.RefreshFailed:
		return !d.Terminal || d.Reason.Valid()
	case domain.AccessRejected:
		return !d.Terminal || d.Reason.Valid()
	}
	return true
}

func decConnectionCreated(p *parser) (domain.Payload, bool) {
	var d domain.ConnectionCreated
	ok := p.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "provider":
			d.Provider, ok = p.sym()
		case "scopes":
			d.Scopes, ok = p.strings()
		case "config":
			d.Config, ok = p.strMap()
		}
		return ok
	}, 3)
	return d, ok
}

func decAuthorisationStarted(p *parser) (domain.Payload, bool) {
	var d domain.AuthorisationStarted
	ok := p.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "attempt_id":
			d.AttemptID, ok = p.str()
		case "scopes":
			d.Scopes, ok = p.strings()
		case "expires_at":
			d.ExpiresAt, ok = p.time()
		}
		return ok
	}, 3)
	return d, ok
}

func decAuthorisationCompleted(p *parser) (domain.Payload, bool) {
	var d domain.AuthorisationCompleted
	ok := p.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "attempt_id":
			d.AttemptID, ok = p.str()
		case "tokens":
			d.Tokens, ok = p.tokenInfo()
		}
		return ok
	}, 2)
	return d, ok
}

func decAuthorisationFailed(p *parser) (domain.Payload, bool) {
	var d domain.AuthorisationFailed
	ok := p.object(func(k []byte) bool {
		var ok bool
		var s string
		switch string(k) {
		case "attempt_id":
			d.AttemptID, ok = p.str()
		case "reason":
			s, ok = p.sym()
			d.Reason = domain.Reason(s)
		case "error_code":
			d.ErrorCode, ok = p.sym()
		case "error_description":
			d.Description, ok = p.str()
		}
		return ok
	}, 4)
	return d, ok
}

func decRefreshStarted(p *parser) (domain.Payload, bool) {
	var d domain.RefreshStarted
	ok := p.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "attempt":
			d.Attempt, ok = p.int()
		case "lease_until":
			d.LeaseUntil, ok = p.time()
		case "trigger":
			d.Trigger, ok = p.sym()
		case "refresh_token_fp":
			d.RefreshTokenFP, ok = p.str()
		}
		return ok
	}, 4)
	return d, ok
}

func decRefreshLeaseExtended(p *parser) (domain.Payload, bool) {
	var d domain.RefreshLeaseExtended
	ok := p.object(func(k []byte) bool {
		var ok bool
		if string(k) == "lease_until" {
			d.LeaseUntil, ok = p.time()
		}
		return ok
	}, 1)
	// A zero lease_until is refused by Decode's validation: fall back to it.
	return d, ok && !d.LeaseUntil.IsZero()
}

func decRefreshSucceeded(p *parser) (domain.Payload, bool) {
	var d domain.RefreshSucceeded
	ok := p.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "attempt":
			d.Attempt, ok = p.int()
		case "tokens":
			d.Tokens, ok = p.tokenInfo()
		case "rotated":
			d.Rotated, ok = p.bool()
		}
		return ok
	}, 3)
	return d, ok
}

func decRefreshFailed(p *parser) (domain.Payload, bool) {
	var d domain.RefreshFailed
	ok := p.object(func(k []byte) bool {
		var ok bool
		var s string
		switch string(k) {
		case "terminal":
			d.Terminal, ok = p.bool()
		case "class":
			d.Class, ok = p.sym()
		case "error_code":
			d.ErrorCode, ok = p.sym()
		case "http_status":
			d.HTTPStatus, ok = p.int()
		case "attempt":
			d.Attempt, ok = p.int()
		case "reason":
			s, ok = p.sym()
			d.Reason = domain.Reason(s)
		case "retry_at":
			d.RetryAt, ok = p.time()
		}
		return ok
	}, 7)
	return d, ok
}

func decAccessRejected(p *parser) (domain.Payload, bool) {
	var d domain.AccessRejected
	ok := p.object(func(k []byte) bool {
		var ok bool
		var s string
		switch string(k) {
		case "http_status":
			d.HTTPStatus, ok = p.int()
		case "error_code":
			d.ErrorCode, ok = p.sym()
		case "scope":
			d.Scope, ok = p.sym()
		case "access_token_fp":
			d.AccessTokenFP, ok = p.str()
		case "terminal":
			d.Terminal, ok = p.bool()
		case "reason":
			s, ok = p.sym()
			d.Reason = domain.Reason(s)
		}
		return ok
	}, 6)
	return d, ok
}

func decTokensInvalidated(p *parser) (domain.Payload, bool) {
	var d domain.TokensInvalidated
	ok := p.object(func(k []byte) bool {
		var ok bool
		var s string
		switch string(k) {
		case "reason":
			s, ok = p.sym()
			d.Reason = domain.Reason(s)
		case "access_token_fp":
			d.AccessTokenFP, ok = p.str()
		case "refresh_token_fp":
			d.RefreshTokenFP, ok = p.str()
		case "provider_revoked":
			d.ProviderRevoked, ok = p.bool()
		}
		return ok
	}, 4)
	return d, ok
}

func decConnectionUpdated(p *parser) (domain.Payload, bool) {
	var d domain.ConnectionUpdated
	ok := p.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "scopes":
			d.Scopes, ok = p.strings()
		case "config":
			d.Config, ok = p.strMap()
		}
		return ok
	}, 2)
	return d, ok
}

func decConnectionDeleted(p *parser) (domain.Payload, bool) {
	return domain.ConnectionDeleted{}, p.object(func([]byte) bool { return false }, 0)
}

// interner shares the strings that repeat across events (actors, providers,
// scopes, reasons, error codes, triggers): fewer allocations while decoding
// and less memory in the projections. One per Decoder.
type interner struct{ m map[string]string }

func (in *interner) get(b []byte) string {
	if in == nil || len(b) > 64 {
		return string(b)
	}
	if in.m == nil {
		in.m = make(map[string]string, 256)
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.m) < 4096 {
		in.m[s] = s
	}
	return s
}

// parser reads the canonical JSON subset. Every method returns false on
// anything outside it; the caller then falls back to encoding/json.
type parser struct {
	b  []byte
	i  int
	in *interner
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) next(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (p *parser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// rawStr returns the contents of a string without escapes, control
// characters or invalid UTF-8 (encoding/json would rewrite those).
func (p *parser) rawStr() ([]byte, bool) {
	if !p.next('"') {
		return nil, false
	}
	b := p.b[p.i:]
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(b); i += 8 { // eight ASCII bytes at a time (SWAR)
		w := binary.LittleEndian.Uint64(b[i:])
		if w&hi != 0 {
			break // non-ASCII: byte by byte below
		}
		q, bs := w^('"'*lo), w^('\\'*lo)
		// The lowest flagged byte is exact: a quote, a backslash or a
		// control character (< 0x20).
		if m := ((q - lo) &^ q & hi) | ((bs - lo) &^ bs & hi) | ((w - 0x20*lo) &^ w & hi); m != 0 {
			j := i + bits.TrailingZeros64(m)/8
			if b[j] != '"' {
				return nil, false
			}
			p.i += j + 1
			return b[:j], true
		}
	}
	ascii := true
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			s := b[:i]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			p.i += i + 1
			return s, true
		}
		if strSpecial[c] {
			if c == '\\' || c < 0x20 {
				return nil, false
			}
			ascii = false
		}
	}
	return nil, false
}

// strSpecial marks the bytes rawStr must look at: escapes, control
// characters and non-ASCII.
var strSpecial = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

// null consumes a JSON null. encoding/json leaves a field alone for null,
// which for the fresh values decoded here is the zero value.
func (p *parser) null() bool {
	p.ws()
	if len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

func (p *parser) str() (string, bool) {
	if p.null() {
		return "", true
	}
	s, ok := p.rawStr()
	return string(s), ok
}

// sym reads a string likely to repeat, interned.
func (p *parser) sym() (string, bool) {
	if p.null() {
		return "", true
	}
	s, ok := p.rawStr()
	if !ok {
		return "", false
	}
	return p.in.get(s), true
}

func (p *parser) skipStr() bool {
	_, ok := p.rawStr()
	return ok
}

// int reads a non-negative integer of at most 18 digits.
func (p *parser) int() (int, bool) {
	if p.null() {
		return 0, true
	}
	start, n := p.i, 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		n = n*10 + int(p.b[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > 18 || (digits > 1 && p.b[start] == '0') {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	return n, true
}

func (p *parser) bool() (bool, bool) {
	if p.null() {
		return false, true
	}
	switch {
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		p.i += 4
		return true, true
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// time reads a string with time.Time's own JSON decoding (what
// encoding/json calls).
func (p *parser) time() (time.Time, bool) {
	if p.null() {
		return time.Time{}, true
	}
	start := p.i
	if _, ok := p.rawStr(); !ok {
		return time.Time{}, false
	}
	var t time.Time
	if err := t.UnmarshalJSON(p.b[start:p.i]); err != nil {
		return time.Time{}, false
	}
	return t, true
}

func (p *parser) strings() ([]string, bool) {
	if p.null() {
		return nil, true
	}
	if !p.next('[') {
		return nil, false
	}
	out := make([]string, 0, 2)
	if p.next(']') {
		return out, true
	}
	for {
		s, ok := p.sym()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if p.next(']') {
			return out, true
		}
		if !p.next(',') {
			return nil, false
		}
	}
}

func (p *parser) strMap() (map[string]string, bool) {
	if p.null() {
		return nil, true
	}
	if !p.next('{') {
		return nil, false
	}
	out := map[string]string{}
	if p.next('}') {
		return out, true
	}
	for {
		k, ok := p.rawStr()
		if !ok || !p.next(':') {
			return nil, false
		}
		v, ok := p.sym()
		if !ok {
			return nil, false
		}
		out[p.in.get(k)] = v // a repeated key: the last wins, as in encoding/json
		if p.next('}') {
			return out, true
		}
		if !p.next(',') {
			return nil, false
		}
	}
}

func (p *parser) tokenInfo() (domain.TokenInfo, bool) {
	var t domain.TokenInfo
	if p.null() {
		return t, true
	}
	ok := p.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "access_token_fp":
			t.AccessTokenFP, ok = p.str()
		case "refresh_token_fp":
			t.RefreshTokenFP, ok = p.str()
		case "access_token_expires_at":
			t.AccessTokenExpiresAt, ok = p.time()
		case "scopes":
			t.Scopes, ok = p.strings()
		}
		return ok
	}, 4)
	return t, ok
}

// object reads an object whose keys are all known to field (which reads the
// value and returns false for an unknown key). A key seen twice, or more than
// maxKeys keys, fails: encoding/json's rules for those are left to it.
func (p *parser) object(field func(key []byte) bool, maxKeys int) bool {
	if !p.next('{') {
		return false
	}
	if p.next('}') {
		return true
	}
	var seen [12][]byte
	n := 0
	for {
		k, ok := p.rawStr()
		if !ok || !p.next(':') || n >= maxKeys {
			return false
		}
		for _, s := range seen[:n] {
			if string(s) == string(k) {
				return false
			}
		}
		seen[n] = k
		n++
		if !field(k) {
			return false
		}
		if p.next('}') {
			return true
		}
		if !p.next(',') {
			return false
		}
	}
}
