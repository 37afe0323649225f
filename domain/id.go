package domain

// ValidConnectionID reports whether id is a canonical lowercase UUID
// (8-4-4-4-12 hex digits). Connection ids become NATS subject tokens and KV
// keys, so nothing else (dots, wildcards, spaces) is accepted.
//
// It runs for every message `tokenline verify` reads: a table lookup per
// byte compared with the class the position wants, without branches.
func ValidConnectionID(id string) bool { return validID(id) }

// ValidConnectionIDBytes is ValidConnectionID of a byte slice, without
// converting it to a string (which allocates: an id is longer than the
// compiler's stack buffer for conversions).
func ValidConnectionIDBytes(id []byte) bool { return validID(id) }

func validID[T string | []byte](id T) bool {
	if len(id) != 36 {
		return false
	}
	var bad byte
	for i := range 36 {
		bad |= idClass[id[i]] ^ idPattern[i]
	}
	return bad == 0
}

// idClass is 1 for a lowercase hex digit, 2 for '-', 0 for any other
// byte; idPattern is the class each position of a UUID wants.
var idClass = func() (t [256]byte) {
	for c := range t {
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
			t[c] = 1
		case c == '-':
			t[c] = 2
		}
	}
	return t
}()

var idPattern = func() (p [36]byte) {
	for i := range p {
		p[i] = 1
	}
	p[8], p[13], p[18], p[23] = 2, 2, 2, 2
	return p
}()
