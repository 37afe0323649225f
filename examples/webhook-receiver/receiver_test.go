package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/webhook"
)

// The Standard Webhooks specification's own test vector.
func TestVerifiesTheSpecVector(t *testing.T) {
	r, err := NewReceiver("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return time.Unix(1614265330, 0) }
	body := []byte(`{"test": 2432232314}`)
	if err := r.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 1}`)); err == nil {
		t.Fatal("an altered body verified")
	}
	r.now = func() time.Time { return time.Unix(1614265330, 0).Add(10 * time.Minute) }
	if err := r.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body); err == nil {
		t.Fatal("a stale timestamp verified")
	}
}

// What tokenline signs, this receiver (written from the spec alone)
// verifies; it de-duplicates on webhook-id and refuses a bad signature.
func TestReceivesTokenlineDeliveries(t *testing.T) {
	secret := webhook.NewSecret()
	var out bytes.Buffer
	r, err := NewReceiver(secret, &out)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	defer srv.Close()
	key, _ := webhook.SecretKey(secret)
	body := []byte(`{"specversion":"1.0","id":"e1","type":"tokenline.refresh.failed","subject":"c1","time":"2026-12-02T00:00:00Z"}`)
	send := func(sig string) int {
		ts := time.Now().Unix()
		if sig == "" {
			sig = webhook.Sign(key, "e1", ts, body)
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header.Set("webhook-id", "e1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", "v1,bm9wZQ== "+sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(""); got != http.StatusNoContent {
		t.Fatalf("status %d", got)
	}
	if got := send(""); got != http.StatusNoContent { // a retry: accepted, not printed again
		t.Fatalf("status %d", got)
	}
	if got := send("v1,AAAA"); got != http.StatusUnauthorized {
		t.Fatalf("bad signature: status %d", got)
	}
	if strings.Count(out.String(), "refresh.failed") != 1 || !strings.Contains(out.String(), "c1") {
		t.Fatalf("printed:\n%s", out.String())
	}
}
