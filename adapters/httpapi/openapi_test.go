package httpapi_test

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/projections"
)

type openAPIDoc struct {
	OpenAPI    string                    `yaml:"openapi"`
	Paths      map[string]map[string]any `yaml:"paths"`
	Components struct {
		Schemas map[string]struct {
			Required   []string       `yaml:"required"`
			Properties map[string]any `yaml:"properties"`
		} `yaml:"schemas"`
	} `yaml:"components"`
}

// TestOpenAPIMatchesTheServer keeps docs/openapi.yaml true to the code: every
// route the server serves is documented with its methods, and each response
// and request schema lists exactly the JSON fields of its Go type.
func TestOpenAPIMatchesTheServer(t *testing.T) {
	var doc openAPIDoc
	porttest.ReadYAML(t, "../../docs/openapi.yaml", &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	routes := map[string][]string{
		"/v1/connections":                    {"get", "post"},
		"/v1/connections/{id}":               {"delete", "get", "patch"},
		"/v1/connections/{id}/authorize":     {"post"},
		"/v1/connections/{id}/token":         {"get"},
		"/v1/connections/{id}/rejections":    {"post"},
		"/v1/connections/{id}/events":        {"get"},
		"/v1/connections/{id}/state":         {"get"},
		"/v1/events/timeline":                {"get"},
		"/v1/providers":                      {"get"},
		"/v1/providers/{name}/client-secret": {"put"},
		"/v1/ui/login-links":                 {"post"},
		"/ui/login":                          {"get"},
		"/ui/logout":                         {"post"},
		"/v1/signing-key":                    {"get"},
		"/v1/webhooks":                       {"get", "post"},
		"/v1/webhooks/{id}":                  {"delete", "get"},
		"/v1/webhooks/{id}/pause":            {"post"},
		"/v1/webhooks/{id}/resume":           {"post"},
		"/v1/webhooks/{id}/secret":           {"post"},
		"/v1/webhooks/{id}/deliveries":       {"get"},
		"/v1/webhooks/{id}/replay":           {"post"},
		"/oauth/callback":                    {"get"},
		"/healthz":                           {"get"},
		"/readyz":                            {"get"},
		"/metrics":                           {"get"},
	}
	for path, methods := range routes {
		item, ok := doc.Paths[path]
		if !ok {
			t.Errorf("%s is not documented", path)
			continue
		}
		var got []string
		for k := range item {
			if k != "parameters" {
				got = append(got, k)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, methods) {
			t.Errorf("%s documents %v, the server serves %v", path, got, methods)
		}
	}
	if len(doc.Paths) != len(routes) {
		t.Errorf("openapi documents %d paths, the server serves %d", len(doc.Paths), len(routes))
	}
	types := map[string]any{
		"ConnectionStatus":      apitypes.ConnectionStatus{},
		"RefreshInfo":           apitypes.RefreshInfo{},
		"Error":                 apitypes.ErrorBody{},
		"GateError":             apitypes.GateErrorBody{},
		"CreateRequest":         apitypes.CreateRequest{},
		"UpdateRequest":         apitypes.UpdateRequest{},
		"RejectionRequest":      apitypes.RejectionRequest{},
		"TokenResponse":         apitypes.TokenResponse{},
		"AuthorizeResponse":     apitypes.AuthorizeResponse{},
		"LoginLinkResponse":     apitypes.LoginLinkResponse{},
		"ListResponse":          apitypes.ListResponse{},
		"StateAtResponse":       httpapi.StateAtResponse{},
		"Transition":            projections.Transition{},
		"TransitionCount":       projections.TransitionCount{},
		"TimelineResponse":      projections.TimelineReport{},
		"Health":                apitypes.HealthResponse{},
		"ProvidersResponse":     apitypes.ProvidersResponse{},
		"Provider":              apitypes.Provider{},
		"ProviderEndpoints":     apitypes.ProviderEndpoints{},
		"SigningKey":            apitypes.SigningKey{},
		"WebhookCreateRequest":  apitypes.WebhookCreateRequest{},
		"Webhook":               apitypes.Webhook{},
		"WebhookList":           apitypes.WebhookList{},
		"WebhookAttempt":        apitypes.WebhookAttempt{},
		"WebhookDeadLetter":     apitypes.WebhookDeadLetter{},
		"WebhookDeliveries":     apitypes.WebhookDeliveries{},
		"WebhookReplayRequest":  apitypes.WebhookReplayRequest{},
		"WebhookReplayResponse": apitypes.WebhookReplayResponse{},
	}
	for name, v := range types {
		sc, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		all, always := porttest.JSONFields(reflect.TypeOf(v))
		props := slices.Sorted(maps.Keys(sc.Properties))
		if !slices.Equal(props, all) {
			t.Errorf("schema %s properties %v, the Go type has %v", name, props, all)
		}
		// Response types: required = always written. Request types may
		// require less (the server validates).
		if !strings.HasSuffix(name, "Request") {
			if req := slices.Sorted(slices.Values(sc.Required)); !slices.Equal(req, always) {
				t.Errorf("schema %s required %v, the server always writes %v", name, req, always)
			}
		}
	}
}
