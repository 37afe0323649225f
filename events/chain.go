package events

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

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
	s = s[len(HashPrefix):]
	var bad byte
	for i := range h {
		hi, lo := hexDigit[s[2*i]], hexDigit[s[2*i+1]]
		bad |= hi | lo
		h[i] = hi<<4 | lo&0x0f
	}
	return h, bad&0xf0 == 0
}

// hexDigit maps a lowercase hex digit to its value and every other byte to
// 0xff.
var hexDigit = func() (t [256]byte) {
	for c := range t {
		switch {
		case '0' <= c && c <= '9':
			t[c] = byte(c - '0')
		case 'a' <= c && c <= 'f':
			t[c] = byte(c - 'a' + 10)
		default:
			t[c] = 0xff
		}
	}
	return t
}()

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

// LinkInfo is what the chain check needs of a stored event, read from its
// message bytes by ParseLink without decoding the event: `tokenline verify`
// checks every link of a stream with it, where the whole decode (the
// payload's strings, maps and times) would cost most of the time.
type LinkInfo struct {
	// Type is the event's type.
	Type domain.EventType
	// Subject is the connection id (the envelope's subject attribute),
	// a slice of the message bytes: valid while they are.
	Subject []byte
	// Link is the event's link: its prevhash and the hash of the message.
	Link domain.ChainLink
	// Terminal is the terminal flag of refresh.failed and access.rejected
	// (the transition they take depends on it).
	Terminal bool
}

// ParseLink reads the link of a message in the canonical form Encode writes
// (the form the fast decoder reads: no escapes, the current schema version
// of its type) and hashes it. It checks the envelope as the decoder does
// (the spec version, a non-empty id, a valid connection id and time) and
// that the payload is an object of its type's fields holding well-formed
// values, but does not decode those values. ok is false for anything else:
// the caller then decodes the message in full (Decoder.Decode), which
// decides whether it is an event at all. So a message ParseLink accepts is
// one Decode accepts, except one whose payload has a well-formed value of
// the wrong kind in a known field (a number where a string belongs), which
// no tokenline writes: verify then checks its link as an event's.
func ParseLink(b []byte, l *LinkInfo) bool {
	if len(b) > MaxEventSize {
		return false
	}
	p := parser{b: b}
	var (
		spec, typ, id []byte
		version       int
		haveData      bool
		timeOK        bool
	)
	*l = LinkInfo{}
	ok := p.object(func(key []byte) bool {
		switch string(key) {
		case "specversion":
			var ok bool
			spec, ok = p.rawStr()
			return ok
		case "id":
			var ok bool
			id, ok = p.rawStr()
			return ok
		case "source", "datacontenttype", "actor":
			return p.skipStr()
		case "type":
			var ok bool
			typ, ok = p.rawStr()
			return ok
		case "subject":
			var ok bool
			l.Subject, ok = p.rawStr()
			return ok
		case "time":
			var ok bool
			timeOK, ok = p.validTime()
			return ok
		case "schemaversion":
			var ok bool
			version, ok = p.int()
			return ok
		case "prevhash":
			raw, ok := p.rawStr()
			if ok {
				l.Link.Prev, ok = parseHashBytes(raw)
				l.Link.Chained = true
			}
			return ok
		case "data":
			if !bytes.HasPrefix(typ, []byte(TypePrefix)) {
				return false
			}
			lt, ok := linkTypes[string(typ[len(TypePrefix):])]
			if !ok || version != lt.version {
				return false
			}
			l.Type = lt.typ
			haveData = p.skimPayload(l.Type, lt.kinds, &l.Terminal)
			return haveData
		}
		return false
	}, 11)
	if !ok || !p.end() || !haveData || !timeOK || string(spec) != SpecVersion || len(id) == 0 || len(id) > 128 ||
		!domain.ValidConnectionIDBytes(l.Subject) {
		*l = LinkInfo{}
		return false
	}
	l.Link.Hash = HashOf(b)
	return true
}

// skimPayload checks that the payload is an object of its type's fields
// holding values Decode accepts for them (by their Go kind: strings, a
// non-negative int, a bool, a time, a list of strings, a map of strings, the
// token information), and what validPayload checks (a provider, a valid
// reason); it reads the terminal flag and decodes nothing else.
func (p *parser) skimPayload(t domain.EventType, kinds map[string]fieldKind, terminal *bool) bool {
	var provider, reason []byte
	hasReason := false
	ok := p.object(func(key []byte) bool {
		k, known := kinds[string(key)]
		if !known {
			return false
		}
		switch string(key) {
		case "terminal":
			var ok bool
			*terminal, ok = p.bool()
			return ok
		case "provider":
			if p.null() {
				return true
			}
			var ok bool
			provider, ok = p.rawStr()
			return ok
		case "reason":
			hasReason = true
			if p.null() {
				return true
			}
			var ok bool
			reason, ok = p.rawStr()
			return ok
		}
		return p.skim(k)
	}, len(kinds))
	if !ok {
		return false
	}
	switch t {
	case domain.EventConnectionCreated:
		return len(provider) > 0
	case domain.EventAuthorisationFailed:
		return hasReason && domain.Reason(reason).Valid()
	case domain.EventRefreshFailed, domain.EventAccessRejected:
		return !*terminal || hasReason && domain.Reason(reason).Valid()
	}
	return true
}

// fieldKind is the Go kind of a payload field, as skim checks its value.
type fieldKind uint8

const (
	kindString fieldKind = iota
	kindInt
	kindBool
	kindTime
	kindStrings
	kindStringMap
	kindTokens
)

// linkKinds holds, for each event type the fast decoder reads, the kind of
// each of its payload's fields (by JSON name), from the payload's Go type; a
// type with a field of another kind is left out (ParseLink then declines its
// events, which are decoded in full).
var linkKinds, tokenKinds = func() (map[domain.EventType]map[string]fieldKind, map[string]fieldKind) {
	unmarshaler := reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler := reflect.TypeFor[encoding.TextUnmarshaler]()
	var kindsOf func(t reflect.Type) (map[string]fieldKind, bool)
	kindOf := func(t reflect.Type) (fieldKind, bool) {
		switch {
		case t == reflect.TypeFor[time.Time]():
			return kindTime, true
		case t == reflect.TypeFor[domain.TokenInfo]():
			return kindTokens, true
		case reflect.PointerTo(t).Implements(unmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler):
			return 0, false
		}
		switch t.Kind() {
		case reflect.String:
			return kindString, true
		case reflect.Int:
			return kindInt, true
		case reflect.Bool:
			return kindBool, true
		case reflect.Slice:
			if t.Elem().Kind() == reflect.String && !reflect.PointerTo(t.Elem()).Implements(unmarshaler) && !reflect.PointerTo(t.Elem()).Implements(textUnmarshaler) {
				return kindStrings, true
			}
		case reflect.Map:
			if t.Key() == reflect.TypeFor[string]() && t.Elem() == reflect.TypeFor[string]() {
				return kindStringMap, true
			}
		}
		return 0, false
	}
	kindsOf = func(t reflect.Type) (map[string]fieldKind, bool) {
		out := map[string]fieldKind{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if f.Anonymous {
				return nil, false
			}
			k, ok := kindOf(f.Type)
			if !ok {
				return nil, false
			}
			out[cmp.Or(name, f.Name)] = k
		}
		return out, true
	}
	tokens, tokensOK := kindsOf(reflect.TypeFor[domain.TokenInfo]())
	out := map[domain.EventType]map[string]fieldKind{}
	for t, p := range stubs {
		if _, fast := fastTypes[t]; !fast {
			continue
		}
		k, ok := kindsOf(reflect.TypeOf(p))
		if !ok || (slices.Contains(slices.Collect(maps.Values(k)), kindTokens) && !tokensOK) {
			continue
		}
		out[t] = k
	}
	return out, tokens
}()

// linkType is what ParseLink knows of an event type it reads: the type
// (one string for all its events), its current schema version and its
// payload's fields.
type linkType struct {
	typ     domain.EventType
	version int
	kinds   map[string]fieldKind
}

// linkTypes holds linkKinds' types by name, with their versions: one
// lookup per message, without converting the name to a string.
var linkTypes = func() map[string]linkType {
	out := map[string]linkType{}
	for t, k := range linkKinds {
		out[string(t)] = linkType{typ: t, version: fastTypes[t].version, kinds: k}
	}
	return out
}()

// validTime reads a time (or null) as time does, without keeping it: ok is
// time's; set reports a time that is not the zero time and whose year in
// UTC is in [0, 9999] (what an envelope's time must be). A time in the form
// Encode writes for UTC is checked by timeZ, without time.Parse.
func (p *parser) validTime() (set, ok bool) {
	if p.null() {
		return false, true
	}
	start := p.i
	s, ok := p.rawStr()
	if !ok {
		return false, false
	}
	if zero, ok := timeZ(s); ok {
		return !zero, true
	}
	var t time.Time
	if err := t.UnmarshalJSON(p.b[start:p.i]); err != nil {
		return false, false
	}
	y := t.UTC().Year()
	return !t.IsZero() && y >= 0 && y <= 9999, true
}

// timeZ checks s for the form time.Time.MarshalJSON writes for a UTC time,
// "2006-01-02T15:04:05Z" with an optional fraction of 1 to 9 digits: a date
// that exists (leap years counted), an hour below 24, a minute and a
// second below 60. Every string it accepts time.Time.UnmarshalJSON accepts
// (TestTimeZAgreesWithUnmarshalJSON); ok is false for anything else, which
// the caller leaves to UnmarshalJSON. zero reports the zero time.
func timeZ(s []byte) (zero, ok bool) {
	const n = len("2006-01-02T15:04:05Z")
	if len(s) < n || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[len(s)-1] != 'Z' {
		return false, false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
		if s[i] < '0' || s[i] > '9' {
			return false, false
		}
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range s[i : i+n] {
			v = 10*v + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	hour, minute, sec := num(11, 2), num(14, 2), num(17, 2)
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return false, false
	}
	frac := s[n-1 : len(s)-1]
	nonZero := false
	if len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return false, false
		}
		for _, c := range frac[1:] {
			if c < '0' || c > '9' {
				return false, false
			}
			nonZero = nonZero || c != '0'
		}
	}
	return year == 1 && month == 1 && day == 1 && hour == 0 && minute == 0 && sec == 0 && !nonZero, true
}

// daysIn is the number of days of a month (1-12) in the proleptic
// Gregorian calendar, as package time counts them.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// skim checks one value of the given kind without keeping it; null is the
// zero value of every kind, as encoding/json reads it.
func (p *parser) skim(k fieldKind) bool {
	if p.null() {
		return true
	}
	switch k {
	case kindString:
		return p.skipStr()
	case kindInt:
		_, ok := p.int()
		return ok
	case kindBool:
		_, ok := p.bool()
		return ok
	case kindTime:
		_, ok := p.validTime()
		return ok
	case kindStrings:
		if !p.next('[') {
			return false
		}
		if p.next(']') {
			return true
		}
		for {
			if !p.skim(kindString) {
				return false
			}
			if p.next(']') {
				return true
			}
			if !p.next(',') {
				return false
			}
		}
	case kindStringMap:
		if !p.next('{') {
			return false
		}
		if p.next('}') {
			return true
		}
		for {
			if !p.skipStr() || !p.next(':') || !p.skim(kindString) {
				return false
			}
			if p.next('}') {
				return true
			}
			if !p.next(',') {
				return false
			}
		}
	case kindTokens:
		return p.object(func(key []byte) bool {
			k, ok := tokenKinds[string(key)]
			return ok && k != kindTokens && p.skim(k)
		}, len(tokenKinds))
	}
	return false
}
