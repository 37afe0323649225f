package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// A body that is JSON but not an object gets a message that says so (not
// `field "" has the wrong type`), on every route that takes a body, and
// changes nothing.
func TestNonObjectJSONBodies(t *testing.T) {
	e := newEnv(t)
	id := e.create().ID
	before := e.lastSeq()
	bodies := map[string]string{
		`[]`: "an array", `[{"provider":"sandbox"}]`: "an array", " \n\t[1,2]": "an array",
		`null`: "null", `"sandbox"`: "a string", `42`: "a number", `-1`: "a number", `true`: "a boolean",
	}
	for _, path := range []struct{ method, path string }{
		{"POST", "/v1/connections"},
		{"PATCH", "/v1/connections/" + id},
		{"POST", "/v1/connections/" + id + "/rejections"},
	} {
		for body, kind := range bodies {
			resp, b := e.request(path.method, path.path, body)
			var eb apitypes.ErrorBody
			if err := json.Unmarshal(b, &eb); err != nil || resp.StatusCode != http.StatusBadRequest || eb.Error != "invalid_json" ||
				!strings.Contains(eb.Message, "must be a JSON object") || !strings.Contains(eb.Message, kind) {
				t.Errorf("%s %s %q: %d %s; want 400 invalid_json saying a JSON object is needed, not %s", path.method, path.path, body, resp.StatusCode, b, kind)
			}
		}
	}
	if after := e.lastSeq(); after != before {
		t.Fatalf("refused requests changed the stream: last seq %d -> %d", before, after)
	}
	// An object still works.
	resp, b := e.request("PATCH", "/v1/connections/"+id, ` {"config":{"k":"v"}}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH with an object: %d %s", resp.StatusCode, b)
	}
}
