package projections

import (
	"maps"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// An entry takes the 512-byte size class: above 512 bytes each connection
// would take 576 (the packed config fits in the padding that domain's
// flags no longer scatter).
func TestStatusEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(statusEntry{}); n > 512 || n <= 480 {
		t.Fatalf("statusEntry is %d bytes, want the 512-byte size class", n)
	}
}

// A config packs and unpacks to an equal map; nil and empty stay apart.
func TestConfigPackRoundTrip(t *testing.T) {
	long := strings.Repeat("é", 200) // lengths above 127: two-byte uvarints
	for _, m := range []map[string]string{
		nil,
		{},
		{"scenario": "1234"},
		{"": "", "a": "", "b": "x"},
		{"tenant": "acme", "region": "eu-west-1", long: long, "z\x00": "\xff"},
	} {
		var sv sharedValues
		p := sv.config(m)
		got := unpackConfig(p)
		if !reflect.DeepEqual(got, m) || (got == nil) != (m == nil) {
			t.Fatalf("%q: packed %q, unpacked %#v", m, p, got)
		}
		if n := configPairs(p, func(string, string) {}); n != len(m) {
			t.Fatalf("%q: %d pairs", m, n)
		}
	}
	// Equal configs, whatever the insertion order, are one string.
	var sv sharedValues
	a := sv.config(map[string]string{"a": "1", "b": "2"})
	b := sv.config(map[string]string{"b": "2", "a": "1"})
	if a != b || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatalf("equal configs not shared: %q %q", a, b)
	}
}

// The status projection holds configs packed and gives them back as maps
// of the reader's own: created, updated, kept by an update without one,
// in Connection, Confirmed and List alike, also while an own update is
// ahead of the stream.
func TestStatusConfigRoundTrip(t *testing.T) {
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo", Config: map[string]string{"scenario": "7"}})
	st := NewStatus()
	check := func(step string, want map[string]string) {
		t.Helper()
		c, _ := st.Connection(id)
		k, _ := st.Confirmed(id)
		l := st.List()
		if !reflect.DeepEqual(c.Config, want) || !reflect.DeepEqual(k.Config, want) || len(l) != 1 || !reflect.DeepEqual(l[0].Config, want) {
			t.Fatalf("%s: %v %v %v, want %v", step, c.Config, k.Config, l, want)
		}
		if ent := st.conns[id]; ent.c.Config != nil {
			t.Fatalf("%s: the entry holds a map", step)
		}
	}
	st.Apply(h.evs[0])
	check("created", map[string]string{"scenario": "7"})
	// A reader's map is its own.
	c, _ := st.Connection(id)
	c.Config["scenario"] = "changed"
	check("after a reader wrote its copy", map[string]string{"scenario": "7"})
	st.Apply(h.exec(t, domain.Update{Scopes: []string{"a"}}))
	check("updated without config", map[string]string{"scenario": "7"})
	st.Apply(h.exec(t, domain.Update{Config: map[string]string{}}))
	check("updated to empty", map[string]string{})
	st.Apply(h.exec(t, domain.Update{Config: map[string]string{"x": "1", "y": "2"}}))
	check("updated", map[string]string{"x": "1", "y": "2"})
	if c, _ := st.Connection(id); !reflect.DeepEqual(c, h.conn) {
		t.Fatalf("status differs from the fold:\n%+v\n%+v", c, h.conn)
	}

	// Followed: an own update ahead of the stream is what readers see; the
	// confirmed state keeps the stream's config until the stream brings it.
	st2 := NewStatus()
	st2.follow()
	for _, e := range h.evs {
		if _, err := st2.applyStream(e); err != nil {
			t.Fatal(err)
		}
	}
	own := h.exec(t, domain.Update{Config: map[string]string{"own": "yes"}})
	if _, err := st2.Apply(own); err != nil {
		t.Fatal(err)
	}
	if c, _ := st2.Connection(id); !maps.Equal(c.Config, map[string]string{"own": "yes"}) {
		t.Fatalf("read-your-own-writes: %v", c.Config)
	}
	if k, _ := st2.Confirmed(id); !maps.Equal(k.Config, map[string]string{"x": "1", "y": "2"}) {
		t.Fatalf("confirmed: %v", k.Config)
	}
	if snap := st2.capture(); len(snap) != 1 || !maps.Equal(snap[0].connection().Config, map[string]string{"x": "1", "y": "2"}) {
		t.Fatalf("captured: %v", snap)
	}
	if _, err := st2.applyStream(own); err != nil {
		t.Fatal(err)
	}
	if k, _ := st2.Confirmed(id); !reflect.DeepEqual(k, h.conn) {
		t.Fatalf("confirmed after the stream:\n%+v\n%+v", k, h.conn)
	}
}
