package domain

import "strings"

// Limits of ParseChallenges. They bound the work and the memory spent on a
// WWW-Authenticate header sent by a server tokenline does not control.
const (
	// MaxChallengeBytes is how many bytes of WWW-Authenticate, summed over
	// all header values, ParseChallenges reads. A challenge or parameter cut
	// by the limit is dropped, never returned truncated.
	MaxChallengeBytes = 8 << 10
	// MaxChallenges is the most challenges ParseChallenges returns; it
	// stops reading after that many.
	MaxChallenges = 16
	// MaxChallengeParams is the most parameters kept per challenge; further
	// ones are read and discarded.
	MaxChallengeParams = 16
	// MaxScopeBytes is the length to which BearerError truncates the scope.
	MaxScopeBytes = 512
)

// Challenge is one authentication challenge of a WWW-Authenticate header
// (RFC 9110 §11.6.1): an auth-scheme followed by either a token68 or a list
// of auth-params.
type Challenge struct {
	// Scheme is the auth-scheme in lower case ("bearer", "basic").
	Scheme string
	// Token68 is the token68 form of the credentials' challenge, if the
	// challenge used it (then Params is nil).
	Token68 string
	// Params are the auth-params with lower-case names and unescaped
	// values; the first occurrence of a name wins. Nil when there are none.
	Params map[string]string
}

// ParseChallenges parses WWW-Authenticate header values (RFC 9110 §11.6.1):
//
//	challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// Each value may hold several comma-separated challenges and empty list
// elements; a quoted-string may contain commas, '=' and quoted-pairs
// (backslash escapes), which are unescaped. Scheme and parameter names are
// case-insensitive and returned in lower case. Inside a quoted-string any
// byte but an unescaped '"' is accepted (so that a control character reaches
// SafeErrorCode rather than hiding the parameter).
//
// Parsing is total: at the first syntax error in a value, the challenges and
// parameters completed so far are kept and the rest of that value is
// ignored. Reading stops at MaxChallengeBytes (summed over the values) or
// MaxChallenges, and at most MaxChallengeParams parameters are kept per
// challenge.
func ParseChallenges(headers ...string) []Challenge {
	var out []Challenge
	budget := MaxChallengeBytes
	for _, h := range headers {
		if budget <= 0 || len(out) >= MaxChallenges {
			break
		}
		p := challengeParser{s: h}
		if len(h) > budget {
			p.s, p.truncated = h[:budget], true
		}
		budget -= len(p.s)
		out = p.parse(out)
	}
	return out
}

// BearerError returns the error and scope parameters of the first Bearer
// challenge among the WWW-Authenticate values (RFC 6750 §3). errCode passes
// through SafeErrorCode; scope is cut to MaxScopeBytes. ok is false when
// there is no Bearer challenge (errCode and scope are then "").
func BearerError(headers ...string) (errCode, scope string, ok bool) {
	for _, c := range ParseChallenges(headers...) {
		if c.Scheme == "bearer" {
			scope = c.Params["scope"]
			if len(scope) > MaxScopeBytes {
				scope = scope[:MaxScopeBytes]
			}
			return SafeErrorCode(c.Params["error"]), scope, true
		}
	}
	return "", "", false
}

// challengeParser reads one header value.
type challengeParser struct {
	s         string
	i         int
	truncated bool // s was cut at MaxChallengeBytes: its end is not the value's
}

// complete reports whether a lexeme ending at j is complete: followed by
// another byte, or by the real end of the value.
func (p *challengeParser) complete(j int) bool { return j < len(p.s) || !p.truncated }

// skip advances over spaces and tabs (OWS/BWS).
func (p *challengeParser) skip() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// skipList advances over OWS and commas (empty list elements).
func (p *challengeParser) skipList() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

// token returns the token (1*tchar) at j and where it ends ("" if none).
func (p *challengeParser) token(j int) (string, int) {
	k := j
	for k < len(p.s) && isTchar(p.s[k]) {
		k++
	}
	return p.s[j:k], k
}

// atDelimiter reports whether j is at the end of a list element: the end of
// the value or OWS followed by ',' or the end.
func (p *challengeParser) atDelimiter(j int) bool {
	for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
		j++
	}
	if j == len(p.s) {
		return !p.truncated
	}
	return p.s[j] == ','
}

// parse appends the challenges of p.s to out.
func (p *challengeParser) parse(out []Challenge) []Challenge {
	for len(out) < MaxChallenges {
		p.skipList()
		if p.i == len(p.s) {
			return out
		}
		scheme, end := p.token(p.i)
		if scheme == "" || !p.complete(end) {
			return out
		}
		p.i = end
		c := Challenge{Scheme: strings.ToLower(scheme)}
		if p.i == len(p.s) || p.s[p.i] == ',' {
			out = append(out, c) // a scheme alone
			continue
		}
		if p.s[p.i] != ' ' && p.s[p.i] != '\t' {
			return out // the scheme runs into something that is not a delimiter
		}
		p.skip()
		if t68, end := p.token68(p.i); t68 != "" && p.atDelimiter(end) {
			c.Token68 = t68
			p.i = end
			out = append(out, c)
			continue
		}
		ok := p.params(&c)
		out = append(out, c)
		if !ok {
			return out
		}
	}
	return out
}

// token68 returns the token68 at j and where it ends ("" if none).
func (p *challengeParser) token68(j int) (string, int) {
	k := j
	for k < len(p.s) && isToken68Char(p.s[k]) {
		k++
	}
	if k == j {
		return "", j
	}
	for k < len(p.s) && p.s[k] == '=' {
		k++
	}
	return p.s[j:k], k
}

// params reads the auth-params of c until the next challenge (a token not
// followed by BWS "=") or the end. It returns false on a syntax error.
func (p *challengeParser) params(c *Challenge) bool {
	for {
		p.skipList()
		if p.i == len(p.s) {
			return true
		}
		name, end := p.token(p.i)
		if name == "" {
			return false
		}
		j := end
		for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
			j++
		}
		if j == len(p.s) || p.s[j] != '=' {
			// Not a parameter: the next challenge starts at name.
			return p.complete(j)
		}
		j++
		for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
			j++
		}
		var value string
		if j < len(p.s) && p.s[j] == '"' {
			v, k, ok := p.quoted(j)
			if !ok {
				return false
			}
			value, j = v, k
		} else {
			v, k := p.token(j)
			// A token value ends at OWS, ',' or the real end of the value.
			if v == "" || (k == len(p.s) && p.truncated) || (k < len(p.s) && p.s[k] != ' ' && p.s[k] != '\t' && p.s[k] != ',') {
				return false
			}
			value, j = v, k
		}
		p.i = j
		name = strings.ToLower(name)
		if _, dup := c.Params[name]; !dup && len(c.Params) < MaxChallengeParams {
			if c.Params == nil {
				c.Params = make(map[string]string, 2)
			}
			c.Params[name] = value
		}
		p.skip()
		if p.i < len(p.s) && p.s[p.i] != ',' {
			return false // a parameter must be followed by ',' or the end
		}
	}
}

// quoted reads the quoted-string starting at j (p.s[j] == '"') and returns
// its unescaped content and the index after the closing quote. ok is false
// when the string is not terminated.
func (p *challengeParser) quoted(j int) (value string, end int, ok bool) {
	k := j + 1
	// Fast path: no quoted-pair, the value is a substring.
	for k < len(p.s) && p.s[k] != '"' && p.s[k] != '\\' {
		k++
	}
	if k < len(p.s) && p.s[k] == '"' {
		return p.s[j+1 : k], k + 1, true
	}
	var b strings.Builder
	b.WriteString(p.s[j+1 : k])
	for k < len(p.s) {
		switch c := p.s[k]; c {
		case '\\':
			if k+1 == len(p.s) {
				return "", 0, false
			}
			b.WriteByte(p.s[k+1])
			k += 2
		case '"':
			return b.String(), k + 1, true
		default:
			b.WriteByte(c)
			k++
		}
	}
	return "", 0, false
}

// isTchar reports whether c is an RFC 9110 tchar.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isToken68Char reports whether c may appear in a token68 before its
// trailing '=' padding.
func isToken68Char(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}
