// Command webhook-receiver is an example receiver of tokenline's webhooks.
//
// It verifies each delivery by the Standard Webhooks specification
// (https://www.standardwebhooks.com): the signature is the base64 of the
// HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>" keyed with the
// base64-decoded part of the whsec_ secret, given as "v1,<signature>" in
// the webhook-signature header (several, space-separated, during a secret
// rotation: any one may match); the timestamp must be within 5 minutes. It
// de-duplicates on webhook-id (tokenline delivers at least once: a retry,
// a replay or an instance's crash may send an event again, always with the
// same webhook-id), prints each new event and answers 204.
//
// The verification is written out here by the specification, in a few
// lines of the standard library, rather than with the Standard Webhooks Go
// library (github.com/standard-webhooks/standard-webhooks/libraries), which
// this build environment does not serve; it checks the specification's own
// test vector (receiver_test.go). With the library, verify is
// webhook.NewWebhook(secret) and Verify(body, r.Header).
//
//	tokenline webhooks create --url https://receiver.example/hook   # prints the secret once
//	TOKENLINE_WEBHOOK_SECRET=whsec_... go run ./examples/webhook-receiver -listen 127.0.0.1:9000
//
// The body is the connection event as tokenline stores it: a CloudEvents
// 1.0 envelope (docs/asyncapi.yaml). Events of one connection arrive in
// order.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Tolerance is how far webhook-timestamp may be from now.
const Tolerance = 5 * time.Minute

// maxBody bounds a delivery (tokenline's events are at most 64 KiB).
const maxBody = 1 << 20

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	path := flag.String("path", "/hook", "path of the webhook")
	secretFile := flag.String("secret-file", "", "file holding the whsec_ secret (default: $TOKENLINE_WEBHOOK_SECRET)")
	flag.Parse()
	secret := os.Getenv("TOKENLINE_WEBHOOK_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			log.Fatal(err)
		}
		secret = strings.TrimSpace(string(b))
	}
	r, err := NewReceiver(secret, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+*path, r)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	fmt.Printf("webhook receiver listening on http://%s%s\n", ln.Addr(), *path)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// Receiver verifies, de-duplicates and prints deliveries.
type Receiver struct {
	key []byte
	out io.Writer
	now func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // webhook-id -> first seen
}

// NewReceiver returns a receiver for the whsec_ secret.
func NewReceiver(secret string, out io.Writer) (*Receiver, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 || !strings.HasPrefix(secret, "whsec_") {
		return nil, errors.New("the secret must be whsec_ followed by base64 (set TOKENLINE_WEBHOOK_SECRET or -secret-file)")
	}
	return &Receiver{key: key, out: out, now: time.Now, seen: map[string]time.Time{}}, nil
}

// Verify checks a delivery's signature and timestamp.
func (r *Receiver) Verify(id, timestamp, signatures string, body []byte) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("bad webhook-timestamp")
	}
	if d := r.now().Sub(time.Unix(ts, 0)); d > Tolerance || d < -Tolerance {
		return errors.New("webhook-timestamp outside the tolerance")
	}
	mac := hmac.New(sha256.New, r.key)
	fmt.Fprintf(mac, "%s.%d.", id, ts)
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(signatures) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no valid signature")
}

// event is what the receiver prints of a delivery.
type event struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Subject string    `json:"subject"`
	Time    time.Time `json:"time"`
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBody))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	id := req.Header.Get("webhook-id")
	if err := r.Verify(id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body); err != nil || id == "" {
		http.Error(w, "signature refused", http.StatusUnauthorized)
		return
	}
	var e event
	if err := json.Unmarshal(body, &e); err != nil {
		http.Error(w, "not a CloudEvent", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	_, dup := r.seen[id]
	if !dup {
		if len(r.seen) >= 100000 { // bounded: forget entries older than a day
			for k, t := range r.seen {
				if r.now().Sub(t) > 24*time.Hour {
					delete(r.seen, k)
				}
			}
		}
		r.seen[id] = r.now()
		fmt.Fprintf(r.out, "%s %s %s\n", e.Time.UTC().Format(time.RFC3339), e.Subject, strings.TrimPrefix(e.Type, "tokenline."))
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}
