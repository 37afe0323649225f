package main

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// payloadSamples has one value of every payload type.
var payloadSamples = []domain.Payload{
	domain.ConnectionCreated{}, domain.AuthorisationStarted{}, domain.AuthorisationCompleted{},
	domain.AuthorisationFailed{}, domain.RefreshStarted{}, domain.RefreshSucceeded{}, domain.RefreshFailed{},
	domain.AccessRejected{}, domain.TokensInvalidated{}, domain.ConnectionUpdated{}, domain.ConnectionDeleted{},
	domain.RefreshLeaseExtended{},
}

type schema struct {
	Required   []string       `yaml:"required"`
	Properties map[string]any `yaml:"properties"`
	Extra      map[string]any `yaml:",inline"`
}

type asyncDoc struct {
	AsyncAPI   string `yaml:"asyncapi"`
	Operations map[string]struct {
		Channel  map[string]string   `yaml:"channel"`
		Messages []map[string]string `yaml:"messages"`
	} `yaml:"operations"`
	Channels map[string]struct {
		Address  string         `yaml:"address"`
		Messages map[string]any `yaml:"messages"`
	} `yaml:"channels"`
	Components struct {
		Messages map[string]struct {
			Name    string `yaml:"name"`
			Payload struct {
				Required   []string         `yaml:"required"`
				Properties map[string]any   `yaml:"properties"`
				AllOf      []map[string]any `yaml:"allOf"`
				OneOf      []struct {
					AllOf []map[string]any `yaml:"allOf"`
				} `yaml:"oneOf"`
			} `yaml:"payload"`
		} `yaml:"messages"`
		Schemas map[string]schema `yaml:"schemas"`
	} `yaml:"components"`
}

// versions returns the schemaversion consts a message payload declares.
func versions(parts []map[string]any) []int {
	var out []int
	for _, p := range parts {
		props, _ := p["properties"].(map[string]any)
		sv, _ := props["schemaversion"].(map[string]any)
		if v, ok := sv["const"].(int); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestAsyncAPIMatchesTheWireSchema keeps docs/asyncapi.yaml true to the
// code: every event type is a message with its current schema version, and
// each data schema lists exactly the JSON fields of the domain payload, the
// always-written ones as required.
func TestAsyncAPIMatchesTheWireSchema(t *testing.T) {
	var doc asyncDoc
	porttest.ReadYAML(t, "../../docs/asyncapi.yaml", &doc)
	if doc.AsyncAPI != "3.0.0" {
		t.Errorf("asyncapi version %q", doc.AsyncAPI)
	}
	ch, ok := doc.Channels["connectionEvents"]
	if !ok || ch.Address != "tokenline.conn.{connectionId}" || !strings.HasPrefix(events.Subject("{connectionId}"), "tokenline.conn.") {
		t.Fatalf("channel %+v", ch)
	}
	if len(ch.Messages) != len(domain.EventTypes) {
		t.Errorf("channel lists %d messages, there are %d event types", len(ch.Messages), len(domain.EventTypes))
	}
	// The operations on the connections' channel (receive, send) list every
	// message of the channel.
	for name, op := range doc.Operations {
		if op.Channel["$ref"] != "#/channels/connectionEvents" {
			continue
		}
		var got []string
		for _, m := range op.Messages {
			got = append(got, strings.TrimPrefix(m["$ref"], "#/channels/connectionEvents/messages/"))
		}
		if want := slices.Sorted(maps.Keys(ch.Messages)); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
			t.Errorf("operation %s lists %v, the channel has %v", name, got, want)
		}
	}
	for _, p := range payloadSamples {
		typ := reflect.TypeOf(p)
		et := p.EventType()
		msg, ok := doc.Components.Messages[typ.Name()]
		if !ok {
			t.Errorf("no message %s", typ.Name())
			continue
		}
		if msg.Name != events.TypePrefix+string(et) {
			t.Errorf("message %s named %q", typ.Name(), msg.Name)
		}
		vs := versions(msg.Payload.AllOf)
		for _, o := range msg.Payload.OneOf {
			vs = append(vs, versions(o.AllOf)...)
		}
		if !slices.Contains(vs, events.CurrentVersion[et]) {
			t.Errorf("%s: documented versions %v lack the current version %d", et, vs, events.CurrentVersion[et])
		}
		sc, ok := doc.Components.Schemas[typ.Name()+"Data"]
		if !ok {
			t.Errorf("no schema %sData", typ.Name())
			continue
		}
		all, required := porttest.JSONFields(typ)
		documented := slices.Sorted(maps.Keys(sc.Properties))
		req := slices.Sorted(slices.Values(sc.Required))
		if !slices.Equal(documented, all) {
			t.Errorf("%sData properties %v, the code writes %v", typ.Name(), documented, all)
		}
		if !slices.Equal(req, required) && !(len(req) == 0 && len(required) == 0) {
			t.Errorf("%sData required %v, the code always writes %v", typ.Name(), req, required)
		}
	}
	all, _ := porttest.JSONFields(reflect.TypeOf(domain.TokenInfo{}))
	tokenProps := slices.Sorted(maps.Keys(doc.Components.Schemas["TokenInfo"].Properties))
	if !slices.Equal(tokenProps, all) {
		t.Errorf("TokenInfo properties %v, the code writes %v", tokenProps, all)
	}
	var reasons []string
	for _, ri := range domain.Reasons {
		reasons = append(reasons, string(ri.Reason))
	}
	enum, _ := doc.Components.Schemas["Reason"].Extra["enum"].([]any)
	var documented []string
	for _, r := range enum {
		documented = append(documented, r.(string))
	}
	if !slices.Equal(documented, reasons) {
		t.Errorf("Reason enum %v, domain.Reasons %v", documented, reasons)
	}
	// The other records: webhook dead letters and delivery attempts,
	// checkpoints.
	for name, v := range map[string]any{"WebhookDeadLetter": webhook.DeadLetter{}, "WebhookAttempt": webhook.Attempt{}} {
		p := doc.Components.Messages[name].Payload
		all, required := porttest.JSONFields(reflect.TypeOf(v))
		if got := slices.Sorted(maps.Keys(p.Properties)); !slices.Equal(got, all) {
			t.Errorf("message %s properties %v, the code writes %v", name, got, all)
		}
		if got := slices.Sorted(slices.Values(p.Required)); !slices.Equal(got, required) {
			t.Errorf("message %s required %v, the code always writes %v", name, got, required)
		}
	}
	for name, v := range map[string]any{"SignedCheckpoint": events.SignedCheckpoint{}, "CheckpointStatement": events.Checkpoint{}} {
		sc := doc.Components.Schemas[name]
		all, required := porttest.JSONFields(reflect.TypeOf(v))
		if got := slices.Sorted(maps.Keys(sc.Properties)); !slices.Equal(got, all) {
			t.Errorf("schema %s properties %v, the code writes %v", name, got, all)
		}
		if got := slices.Sorted(slices.Values(sc.Required)); !slices.Equal(got, required) {
			t.Errorf("schema %s required %v, the code always writes %v", name, got, required)
		}
	}
	all, required := porttest.JSONFields(reflect.TypeOf(events.Envelope{}))
	env := doc.Components.Schemas["CloudEvent"]
	envProps := slices.Sorted(maps.Keys(env.Properties))
	req := slices.Sorted(slices.Values(env.Required))
	if !slices.Equal(envProps, all) || !slices.Equal(req, required) {
		t.Errorf("CloudEvent properties %v required %v; Envelope has %v required %v", envProps, req, all, required)
	}
}
