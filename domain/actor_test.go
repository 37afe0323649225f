package domain_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Reasons about tokenline's client are the operator's; every other reason
// of an unauthenticated connection is the user's.
func TestActionBy(t *testing.T) {
	operator := []domain.Reason{domain.ReasonInvalidClient, domain.ReasonUnauthorizedClient, domain.ReasonUnsupportedGrantType}
	for _, ri := range domain.Reasons {
		want := domain.ActorUser
		switch {
		case slices.Contains(operator, ri.Reason):
			want = domain.ActorOperator
		case ri.Reason == domain.ReasonConnectionDeleted:
			want = domain.ActorNone
		}
		if got := domain.ActionBy(ri.Reason); got != want {
			t.Errorf("ActionBy(%s) = %q, want %q", ri.Reason, got, want)
		}
		if (domain.OperatorText(ri.Reason) != "") != (want == domain.ActorOperator) {
			t.Errorf("OperatorText(%s) = %q", ri.Reason, domain.OperatorText(ri.Reason))
		}
	}
	if !strings.Contains(domain.OperatorText(domain.ReasonInvalidClient), "client-secret") {
		t.Error("invalid_client's operator text does not say how to install the new secret")
	}
	for _, c := range []struct {
		e     domain.GateError
		retry bool
		actor domain.Actor
	}{
		{domain.GateError{Detail: domain.DetailRefreshing}, true, domain.ActorNone},
		{domain.GateError{Detail: domain.DetailTokenExpired}, true, domain.ActorNone},
		{domain.GateError{Detail: domain.DetailTokenNotLoaded}, true, domain.ActorNone},
		{domain.GateError{Detail: domain.DetailUnknownConnection}, false, domain.ActorNone},
		{domain.GateError{Detail: domain.DetailReauthorising, Reason: domain.ReasonInvalidClient}, false, domain.ActorUser},
		{domain.GateError{Detail: domain.DetailUnauthenticated, Reason: domain.ReasonInvalidClient}, false, domain.ActorOperator},
		{domain.GateError{Detail: domain.DetailUnauthenticated, Reason: domain.ReasonInvalidGrant}, false, domain.ActorUser},
	} {
		if c.e.RetryLater() != c.retry || c.e.ActionBy() != c.actor {
			t.Errorf("%+v: RetryLater %v ActionBy %q; want %v %q", c.e, c.e.RetryLater(), c.e.ActionBy(), c.retry, c.actor)
		}
	}
}

// authorisation.failed carries only the reasons docs/asyncapi.yaml lists
// for it, whatever the provider answered the code exchange with.
func TestAuthorisationFailedReasonsAreDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "AuthorisationFailedData:")
	if i < 0 {
		t.Fatal("no AuthorisationFailedData in docs/asyncapi.yaml")
	}
	m := regexp.MustCompile(`enum: \[([a-z_, ]+)\]`).FindStringSubmatch(doc[i:])
	if m == nil {
		t.Fatal("AuthorisationFailedData.reason has no enum")
	}
	allowed := strings.Split(m[1], ", ")
	codes := []string{"", "access_denied", "invalid_request", "server_error", "temporarily_unavailable", "invalid_grant", "invalid_client",
		"unauthorized_client", "unsupported_grant_type", "invalid_scope", "network", "timeout", "http_503", "rate_limited", "malformed_response", "something_else",
		// Codes a provider may answer although they are tokenline's own
		// words or unknown: the reason must still be a documented one.
		"rotated_tokens_lost", "no_refresh_token", "refresh_not_granted", "weird_code", "authorisation_expired", "connection_deleted",
		"access_token_rejected", "refresh_retries_exhausted", "INVALID_GRANT", " invalid_client", "invalid_client\x00"}
	for _, exchange := range []bool{false, true} {
		for _, code := range codes {
			for _, expired := range []bool{false, true} {
				var c domain.Connection
				for i, cmd := range []domain.Command{domain.Create{Provider: "p"}, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: time.Now().Add(time.Hour)}} {
					p, err := domain.Decide(&c, cmd)
					if err != nil {
						t.Fatal(err)
					}
					if err := c.Apply(domain.Event{ID: "e", ConnectionID: "c", Time: time.Now(), Seq: uint64(i + 1), Payload: p}); err != nil {
						t.Fatal(err)
					}
				}
				p, err := domain.Decide(&c, domain.FailAuthorisation{AttemptID: "a", Exchange: exchange, Expired: expired, ErrorCode: code})
				if err != nil {
					t.Fatalf("decide: %v", err)
				}
				r := p.(domain.AuthorisationFailed).Reason
				if !slices.Contains(allowed, string(r)) {
					t.Errorf("FailAuthorisation{exchange %v, expired %v, %q} gives reason %s, which docs/asyncapi.yaml does not allow", exchange, expired, code, r)
				}
			}
		}
	}
}

// The timing rule leaves a healthy connection a usable token for every
// lifetime it accepts: the earliest-jittered refresh starts at least
// margin + latency + slack before expiry, the latest-jittered one after the
// token's first half... and no later than its life allows.
func TestTokenTimingRule(t *testing.T) {
	for _, tt := range []domain.TokenTiming{{}, {MaxGateMargin: 2 * time.Second, RefreshLatency: 200 * time.Millisecond}, {RefreshLatency: 3 * time.Second}} {
		minL := tt.MinLifetime()
		if tt.Check(minL) != nil || tt.Check(minL-10*time.Millisecond) == nil {
			t.Errorf("%+v: MinLifetime %v is not the boundary of Check", tt, minL)
		}
		for l := minL; l < 30*24*time.Hour; l = l*11/10 + time.Millisecond {
			m, need, lead := tt.GateMargin(l), tt.Need(l), tt.Lead(l)
			if m > l/10 || m > max(tt.MaxGateMargin, domain.DefaultMaxGateMargin) {
				t.Fatalf("%+v L=%v: margin %v", tt, l, m)
			}
			if early := time.Duration(float64(lead) * 0.9); early < need {
				t.Fatalf("%+v L=%v: the earliest jittered lead %v is less than need %v", tt, l, early, need)
			}
			if late := time.Duration(float64(lead) * 1.1); late >= l {
				t.Fatalf("%+v L=%v: the latest jittered lead %v is the whole life", tt, l, late)
			}
		}
	}
	d := domain.TokenTiming{}
	if err := d.Check(time.Second); err == nil || !strings.Contains(err.Error(), "shortest lifetime") {
		t.Errorf("1 s tokens with the defaults: %v", err)
	}
	for l, want := range map[time.Duration]time.Duration{5 * time.Second: 500 * time.Millisecond, 20 * time.Second: 2 * time.Second, 15 * time.Minute: 10 * time.Second, 24 * time.Hour: 10 * time.Second} {
		if got := d.GateMargin(l); got != want {
			t.Errorf("GateMargin(%v) = %v, want %v", l, got, want)
		}
	}
}
