package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// FuzzQueryParams feeds arbitrary values to the time and type query
// parameters of the audit and timeline routes: a value is either accepted
// (a time that formats back to the same instant; known event types, each
// once) or refused with a 400 whose JSON body names the problem without a
// control character.
func FuzzQueryParams(f *testing.F) {
	for _, s := range []string{"2026-11-28T10:02:00Z", "2026-11-28T10:02:00.123456789+02:00", "yesterday", "", "refresh.started", "tokenline.refresh.failed,connection.created", "nope\x1b[2J", ",,,", "refresh.started,refresh.started"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		q := url.Values{"from": {v}, "type": {v}}
		r := httptest.NewRequest(http.MethodGet, "/v1/events/timeline?"+q.Encode(), nil)

		w := httptest.NewRecorder()
		var tm time.Time
		if parseTime(w, r, "from", &tm) {
			if v != "" {
				back, err := time.Parse(time.RFC3339Nano, tm.Format(time.RFC3339Nano))
				if err != nil || !back.Equal(tm) {
					t.Fatalf("accepted time %q does not round-trip: %v", v, err)
				}
			}
		} else {
			checkRefusal(t, w, "invalid_time")
		}

		w = httptest.NewRecorder()
		types, ok := typeFilter(w, r)
		if !ok {
			checkRefusal(t, w, "invalid_type")
			return
		}
		for i, et := range types {
			if !slices.Contains(domain.EventTypes, et) || slices.Contains(types[:i], et) {
				t.Fatalf("type filter %q gave %v", v, types)
			}
		}
	})
}

func checkRefusal(t *testing.T, w *httptest.ResponseRecorder, code string) {
	t.Helper()
	if w.Code != http.StatusBadRequest {
		t.Fatalf("refusal with status %d", w.Code)
	}
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != code {
		t.Fatalf("refusal body %q: %v", w.Body.String(), err)
	}
	for _, r := range body.Message {
		if r < 0x20 || r == 0x7f {
			t.Fatalf("refusal message carries a control character: %q", body.Message)
		}
	}
}
