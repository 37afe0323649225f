package tests

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/tokenline/tokenline/adapters/roundtrip"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// countingTransport counts the requests that reach the network.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// A Go integration wraps its http.Client with tokenline's RoundTripper and
// calls the provider's API (the sandbox's /api/me): the bearer is injected;
// after the user revokes access the 401 is reported, tokenline's one refresh
// fails, the connection is unauthenticated, and the next call is refused
// with ErrUnauthenticated without touching the network.
func TestRoundTripperAgainstProviderAPI(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	net := &countingTransport{}
	client := (&roundtrip.Transport{Base: net, Gate: in.Lifecycle, Reporter: lifecycle.Reporter{S: in.Lifecycle}, ConnectionID: id}).Client()
	get := func() (*http.Response, error) {
		resp, err := client.Get(in.BaseURL + "/sandbox/api/me")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	if resp, err := get(); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first call: %v %v", resp, err)
	}
	admin(t, in, "revoke-grants", nil, nil)
	if resp, err := get(); err != nil || resp.StatusCode != 401 {
		t.Fatalf("after revocation: %v %v", resp, err)
	}
	c := load(t, in, id)
	if c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAccessTokenRejected {
		t.Fatalf("after the reported 401: %s %s", c.State, c.Reason)
	}
	before := net.n.Load()
	_, err := get()
	if !errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("gated call: %v", err)
	}
	if net.n.Load() != before {
		t.Fatal("a gated call reached the network")
	}
	// Reconnect and the same client works again.
	authorise(t, in, id)
	if resp, err := get(); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after reconnect: %v %v", resp, err)
	}
}
