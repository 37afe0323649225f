package tests

import (
	"net/http"
	"strings"
	"testing"
)

// Request headers are bounded on tokenline's listener as on `tokenline
// sandbox`'s: anyone who can reach the port, before any authentication,
// could otherwise make each connection hold a megabyte of headers
// (net/http's default).
func TestRequestHeadersBounded(t *testing.T) {
	in := start(t, nil)
	get := func(header int) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, in.BaseURL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Padding", strings.Repeat("x", header))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(32 << 10); got != http.StatusOK {
		t.Fatalf("32 KiB of headers: %d, want 200", got)
	}
	if got := get(200 << 10); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("200 KiB of headers: %d, want 431", got)
	}
}
