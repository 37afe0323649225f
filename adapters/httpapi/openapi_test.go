package httpapi_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

type openAPIDoc struct {
	OpenAPI string `yaml:"openapi"`
	Info    struct {
		Description string `yaml:"description"`
	} `yaml:"info"`
	Paths      map[string]map[string]any `yaml:"paths"`
	Components struct {
		Schemas map[string]struct {
			Required   []string       `yaml:"required"`
			Properties map[string]any `yaml:"properties"`
			Enum       []string       `yaml:"enum"`
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
	// Every route the source registers (servedRoutes) is documented with
	// its methods, or is one of the paths the description names as outside
	// the API; every documented path is served.
	notAPI := map[string]string{ // path -> what the description must name
		"/":                    "Any other path answers 404",
		"/v1/":                 "Any other path answers 404",
		"/{$}":                 "`/` and `/ui` redirect to `/ui/`",
		"/ui":                  "`/` and `/ui` redirect to `/ui/`",
		"/ui/":                 "Any other path answers 404",
		"/ui/{$}":              "`/ui/`",
		"/ui/connections/{id}": "`/ui/connections/{id}`",
		"/ui/webhooks":         "`/ui/webhooks`",
		"/ui/static/":          "`/ui/static/`",
		"/sandbox/":            "`/sandbox/`",
		"/.well-known/oauth-authorization-server/sandbox": "`/.well-known/oauth-authorization-server/sandbox`",
	}
	routes := servedRoutes(t)
	for path, methods := range routes {
		if want, ok := notAPI[path]; ok {
			if !strings.Contains(doc.Info.Description, want) {
				t.Errorf("%s is served outside the API, but the description does not say %q", path, want)
			}
			continue
		}
		item, ok := doc.Paths[path]
		if !ok {
			t.Errorf("%s (%v) is served but not documented", path, methods)
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
	for path := range doc.Paths {
		if _, ok := routes[path]; !ok {
			t.Errorf("%s is documented but not served", path)
		}
	}
	for _, p := range []string{"/v1/connections", "/v1/webhooks/{id}/replay", "/ui/login", "/metrics"} {
		if _, ok := routes[p]; !ok {
			t.Fatalf("servedRoutes found no %s: it no longer reads the registrations", p)
		}
	}
	// The closed sets: event types (the `type` filter of the audit route
	// accepts each), states and reasons.
	var eventTypes, states []string
	for _, et := range domain.EventTypes {
		eventTypes = append(eventTypes, string(et))
	}
	for _, st := range domain.States {
		states = append(states, string(st))
	}
	reasons := []string{""}
	for _, ri := range domain.Reasons {
		reasons = append(reasons, string(ri.Reason))
	}
	for name, want := range map[string][]string{"EventType": eventTypes, "State": states, "Reason": reasons} {
		if got := doc.Components.Schemas[name].Enum; !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			t.Errorf("schema %s enum %q, the code has %q", name, got, want)
		}
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

// servedRoutes reads the route registrations from the package's source:
// route(mux, PATH, map[string]http.HandlerFunc{"GET": ...}) and
// mux.Handle/HandleFunc("[METHOD ]PATH", ...), PATH a string literal or an
// apitypes constant. It answers the lower-case methods by path (a pattern
// without a method adds none).
func servedRoutes(t *testing.T) map[string][]string {
	t.Helper()
	fset := token.NewFileSet()
	parseDir := func(dir string) []*ast.File {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var files []*ast.File
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		return files
	}
	consts := map[string]string{}
	for _, f := range parseDir("apitypes") {
		ast.Inspect(f, func(n ast.Node) bool {
			if vs, ok := n.(*ast.ValueSpec); ok {
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						break
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[name.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
			return true
		})
	}
	str := func(e ast.Expr) (string, bool) {
		switch e := e.(type) {
		case *ast.BasicLit:
			v, err := strconv.Unquote(e.Value)
			return v, e.Kind == token.STRING && err == nil
		case *ast.SelectorExpr:
			if x, ok := e.X.(*ast.Ident); ok && x.Name == "apitypes" {
				v, ok := consts[e.Sel.Name]
				return v, ok
			}
		}
		return "", false
	}
	served := map[string][]string{}
	add := func(path, method string) {
		ms := served[path]
		if method != "" && !slices.Contains(ms, method) {
			ms = append(ms, method)
			slices.Sort(ms)
		}
		served[path] = ms
	}
	for _, f := range parseDir(".") {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Name.Name == "route" || fd.Body == nil { // route registers what its callers name
				continue
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				switch fn := call.Fun.(type) {
				case *ast.Ident:
					if fn.Name != "route" || len(call.Args) != 3 {
						return true
					}
					path, ok := str(call.Args[1])
					byMethod, isMap := call.Args[2].(*ast.CompositeLit)
					if !ok || !isMap {
						t.Errorf("%s: a route whose path or methods are not constants", fset.Position(call.Pos()))
						return true
					}
					add(path, "")
					for _, el := range byMethod.Elts {
						kv, _ := el.(*ast.KeyValueExpr)
						if kv == nil {
							continue
						}
						m, ok := str(kv.Key)
						if !ok {
							t.Errorf("%s: a method that is not a constant", fset.Position(kv.Pos()))
							continue
						}
						add(path, strings.ToLower(m))
					}
				case *ast.SelectorExpr:
					if (fn.Sel.Name != "Handle" && fn.Sel.Name != "HandleFunc") || len(call.Args) != 2 {
						return true
					}
					pattern, ok := str(call.Args[0])
					if !ok {
						t.Errorf("%s: a pattern that is not a constant", fset.Position(call.Pos()))
						return true
					}
					method, path, found := strings.Cut(pattern, " ")
					if !found {
						method, path = "", pattern
					}
					add(path, strings.ToLower(method))
				}
				return true
			})
		}
	}
	return served
}
