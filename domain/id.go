package domain

// ValidConnectionID reports whether id is a canonical lowercase UUID
// (8-4-4-4-12 hex digits). Connection ids become NATS subject tokens and KV
// keys, so nothing else (dots, wildcards, spaces) is accepted.
func ValidConnectionID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
