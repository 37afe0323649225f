package roundtrip

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"github.com/tokenline/tokenline/domain"
)

// How the Transport judges the provider's answers: the connection's
// detection rules (domain.DetectionRules), from the Reporter when it
// implements RulesSource (lifecycle.Reporter does: the rules of the
// connection's provider in the providers file), else the default rules.

// RulesSource is implemented by a Reporter that knows each connection's
// detection rules.
type RulesSource interface {
	DetectionRules(connectionID string) domain.DetectionRules
}

// ResponseReporter is implemented by a Reporter that takes the answer's
// body too (at most domain.MaxRejectionBody bytes), so that the provider's
// body rules are applied again where the rejection is recorded. The
// Transport prefers it to Reporter.ReportRejection.
type ResponseReporter interface {
	ReportResponse(ctx context.Context, connectionID string, status int, wwwAuthenticate string, body []byte, accessTokenFP string) error
}

// judge applies the connection's rules to the answer and reports a dead
// token or an insufficient scope synchronously. When a body rule names the
// status, it reads at most domain.MaxRejectionBody bytes of the body (not
// at all when Content-Length says it is longer) and puts them back in front
// of the rest: the caller reads the full body intact.
func (t *Transport) judge(req *http.Request, resp *http.Response, token, joinedWWW string) {
	if t.Reporter == nil {
		return
	}
	var rules domain.DetectionRules
	if rs, ok := t.Reporter.(RulesSource); ok {
		rules = rs.DetectionRules(t.ConnectionID)
	}
	www := resp.Header.Values("WWW-Authenticate")
	var body []byte
	if rules.NeedsBody(resp.StatusCode) && resp.Body != nil && resp.Body != http.NoBody && resp.ContentLength <= domain.MaxRejectionBody {
		body = peekBody(resp, domain.MaxRejectionBody)
	}
	if v, _ := rules.Judge(resp.StatusCode, www, body); v == domain.VerdictNone {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), ReportTimeout)
	defer cancel()
	var err error
	if rr, ok := t.Reporter.(ResponseReporter); ok {
		err = rr.ReportResponse(ctx, t.ConnectionID, resp.StatusCode, joinedWWW, body, domain.Fingerprint(token))
	} else {
		err = t.Reporter.ReportRejection(ctx, t.ConnectionID, resp.StatusCode, joinedWWW, domain.Fingerprint(token))
	}
	if err != nil {
		t.logger().Warn("roundtrip: reporting a rejected access token failed",
			"connection_id", t.ConnectionID, "status", resp.StatusCode, "error", err.Error())
	}
}

// peekBody reads up to limit+1 bytes of resp.Body and replaces the body by
// one that yields those bytes, then the rest (and a read error where the
// original had one). It returns the bytes read if they are at most limit,
// else nil (too long to judge).
func peekBody(resp *http.Response, limit int) []byte {
	buf, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	rest := resp.Body
	var tail io.Reader = rest
	if err != nil {
		tail = errReader{err}
	}
	resp.Body = prefixedBody{Reader: io.MultiReader(bytes.NewReader(buf), tail), Closer: rest}
	if err != nil || len(buf) > limit {
		return nil
	}
	return buf
}

type prefixedBody struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
