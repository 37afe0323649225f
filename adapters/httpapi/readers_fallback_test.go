package httpapi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// A connection the projection has not seen yet (created through another
// instance a moment ago) is served from the event store.
func TestStatusFromProjectionFallsBackToTheStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := jsstore.Open(ctx, natstest.Start(t, "").Connect(t), jsstore.Config{Actor: "instance/b"})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	if _, err := st.Append(ctx, id, 0, domain.Event{Payload: domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}}}); err != nil {
		t.Fatal(err)
	}
	empty := projections.NewStatus() // this instance's projection, behind
	if _, err := (httpapi.StatusFromProjection{Status: empty}).Connection(ctx, id); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("without a fallback: %v", err)
	}
	r := httpapi.StatusFromProjection{Status: empty, Fallback: st}
	c, err := r.Connection(ctx, id)
	if err != nil || c.ID != id || c.Provider != "sandbox" {
		t.Fatalf("with the store as fallback: %+v %v", c, err)
	}
	if _, err := r.Connection(ctx, uuid.NewString()); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown connection: %v", err)
	}
	if _, err := r.Connection(ctx, "not a valid id"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("invalid id: %v", err)
	}
}
