package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/events"
)

// jsonPubAck is how jetstream's PublishMsg reads an acknowledgement.
func jsonPubAck(data []byte) (*jetstream.PubAck, error) {
	var r struct {
		Type  string              `json:"type"`
		Error *jetstream.APIError `json:"error,omitempty"`
		*jetstream.PubAck
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return nil, r.Error
	}
	if r.PubAck == nil || r.PubAck.Stream == "" {
		return nil, jetstream.ErrInvalidJSAck
	}
	return r.PubAck, nil
}

var pubAckSeeds = []string{
	`{"stream":"TOKENLINE","seq":1}`,
	`{"stream":"TOKENLINE","seq":18446744073709551615}`,
	`{"stream":"TOKENLINE","seq":9999999999999999999,"duplicate":true}`,
	`{"stream":"OTHER","seq":42,"duplicate": true}`,
	`{"stream":"TOKENLINE","seq":0}`,
	`{"stream":"TOKENLINE","seq":05}`,
	`{"stream":"TOKENLINE","seq":18446744073709551616}`,
	`{"stream":"TOKENLINE","domain":"hub","seq":7}`,
	`{"stream":"TOKENLINE","seq":7,"duplicate":false}`,
	`{"stream":"TOKENLINE","seq":7,"batch":"b1","count":3}`,
	`{"stream":"TOKEN\u004cINE","seq":7}`,
	`{"stream":"TOK\"EN","seq":7}`,
	`{"stream":"","seq":7}`,
	`{"stream":"TOKENLINE","seq":-1}`,
	`{"stream":"TOKENLINE","seq":7} `,
	`{"stream":"TOKENLINE","seq":7}}`,
	`{"stream":"TOKENLINE","seq":}`,
	`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 6"}}`,
	`{"type":"io.nats.jetstream.api.v1.pub_ack_response","error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`,
	`{"stream":"TOKENLINE","seq":7,"error":{"code":400,"err_code":10071,"description":"x"}}`,
	`{}`, ``, `null`, `{"stream":"TOKENLINE"`,
}

// parsePubAck reads every acknowledgement as jetstream's PublishMsg does:
// the same PubAck, the same error code, or ErrInvalidJSAck alike.
func checkPubAck(t *testing.T, data string) {
	t.Helper()
	want, werr := jsonPubAck([]byte(data))
	got, gerr := parsePubAck([]byte(data), DefaultStream)
	var wapi, gapi *jetstream.APIError
	switch {
	case werr == nil && gerr == nil:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: %+v, encoding/json %+v", data, got, want)
		}
	case errors.As(werr, &wapi):
		if !errors.As(gerr, &gapi) || *gapi != *wapi {
			t.Fatalf("%q: error %v, encoding/json's %v", data, gerr, werr)
		}
	case errors.Is(werr, jetstream.ErrInvalidJSAck):
		if !errors.Is(gerr, jetstream.ErrInvalidJSAck) {
			t.Fatalf("%q: %+v %v, want ErrInvalidJSAck", data, got, gerr)
		}
	default:
		t.Fatalf("%q: encoding/json %v, parsePubAck %+v %v", data, werr, got, gerr)
	}
}

func TestParsePubAckMatchesJSON(t *testing.T) {
	for _, s := range pubAckSeeds {
		checkPubAck(t, s)
	}
	for _, s := range []string{pubAckSeeds[0], pubAckSeeds[2], pubAckSeeds[3], pubAckSeeds[4]} { // the forms read without encoding/json
		if _, ok := fastPubAck([]byte(s), DefaultStream); !ok {
			t.Errorf("%q: not read directly", s)
		}
	}
}

func FuzzParsePubAck(f *testing.F) {
	for _, s := range pubAckSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) { checkPubAck(t, data) })
}

// What a real server acknowledges, stored or de-duplicated, is read
// without encoding/json; its refusal of a wrong expected sequence is the
// API error PublishMsg returns.
func TestServerPubAcksAreReadDirectly(t *testing.T) {
	nc := natstest.Start(t, "").Connect(t)
	ctx := context.Background()
	if _, err := Open(ctx, nc, Config{}); err != nil {
		t.Fatal(err)
	}
	msg := func(id string, expected uint64) *nats.Msg {
		m := nats.NewMsg(events.Subject("7d4c8a52-6d1e-4c1e-9a57-0f2d3c4b5a69"))
		m.Data = []byte(`{}`)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expected, 10))
		return m
	}
	id := uuid.NewString()
	var seq uint64
	for i := range 2 { // the second: the same event again, a duplicate
		resp, err := nc.RequestMsgWithContext(ctx, msg(id, seq))
		if err != nil {
			t.Fatal(err)
		}
		ack, ok := fastPubAck(resp.Data, DefaultStream)
		if !ok || ack.Stream != DefaultStream || ack.Sequence == 0 || ack.Duplicate != (i == 1) || (i == 1 && ack.Sequence != seq) {
			t.Fatalf("ack %d %q: %+v %v", i, resp.Data, ack, ok)
		}
		checkPubAck(t, string(resp.Data))
		seq = ack.Sequence
	}
	resp, err := nc.RequestMsgWithContext(ctx, msg(uuid.NewString(), 0))
	if err != nil {
		t.Fatal(err)
	}
	_, err = parsePubAck(resp.Data, DefaultStream)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("wrong expected sequence: %q %v", resp.Data, err)
	}
}
