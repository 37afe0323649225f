package app

// How the client commands print what the API answers: event tables and
// their key data, times, durations and lists.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// printEventTable prints events as TIME TYPE ACTOR DETAILS.
func printEventTable(w io.Writer, evs []events.Envelope) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tACTOR\tDETAILS")
	for _, e := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", fmtTimeMilli(e.Time), shortType(e.Type), orDash(e.Actor), eventDetails(e.Data))
	}
	return tw.Flush()
}

// detailKeys are the event data fields shown as key data, in this order.
// Fingerprints and attempt ids are left out (see --json for everything).
var detailKeys = []string{
	"provider", "scopes", "config", "trigger", "attempt", "class", "terminal", "reason",
	"error_code", "error_description", "http_status", "scope", "rotated", "provider_revoked",
	"expires_at", "lease_until", "retry_at",
}

var hiddenDetailKeys = map[string]bool{
	"attempt_id": true, "access_token_fp": true, "refresh_token_fp": true,
}

// eventDetails renders the key data of an event's data as k=v pairs.
func eventDetails(data json.RawMessage) string {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if len(bytes.TrimSpace(data)) == 0 || dec.Decode(&m) != nil {
		return ""
	}
	if tok, ok := m["tokens"].(map[string]any); ok {
		delete(m, "tokens")
		if v, ok := tok["access_token_expires_at"]; ok {
			m["token_expires_at"] = v
		}
		if v, ok := tok["scopes"]; ok {
			m["granted_scopes"] = v
		}
	}
	if _, ok := m["class"]; ok {
		delete(m, "terminal") // class says it
	} else if b, ok := m["terminal"].(bool); ok && !b {
		delete(m, "terminal")
	}
	var parts []string
	done := map[string]bool{}
	add := func(k string) {
		v, ok := m[k]
		done[k] = true
		if !ok || hiddenDetailKeys[k] {
			return
		}
		if s := fmtValue(v); s != "" {
			parts = append(parts, k+"="+s)
		}
	}
	for _, k := range detailKeys {
		add(k)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !done[k] {
			add(k)
		}
	}
	return strings.Join(parts, " ")
}

func fmtValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		if x == "" {
			return ""
		}
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return fmtTimeMilli(t)
		}
		if strings.ContainsAny(x, " \t\"=") || strings.IndexFunc(x, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return strconv.Quote(x) // no raw control sequences reach the terminal
		}
		return x
	case []any:
		var s []string
		for _, e := range x {
			s = append(s, fmtValue(e))
		}
		return strings.Join(s, ",")
	case map[string]any:
		var s []string
		for _, k := range slices.Sorted(maps.Keys(x)) {
			s = append(s, k+":"+fmtValue(x[k]))
		}
		return "{" + strings.Join(s, ",") + "}"
	}
	return fmt.Sprint(v)
}

// shortType strips the CloudEvents type prefix ("tokenline.").
func shortType(t string) string { return strings.TrimPrefix(t, events.TypePrefix) }

// normalizeTypes accepts types with or without the "tokenline." prefix and
// returns them without it, once each.
func normalizeTypes(ts []string) []string {
	var out []string
	for _, t := range ts {
		for _, p := range strings.Split(t, ",") {
			p = shortType(strings.TrimSpace(p))
			if p != "" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func reasonText(reason domain.Reason, given string) string {
	if given != "" {
		return given
	}
	if ri, ok := reason.Info(); ok {
		return ri.UserText
	}
	return ""
}

func withText(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimeMilli(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// fmtRelative says how far t is from now: "in 14m" or "3m ago".
func fmtRelative(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d > -time.Second && d < time.Second {
		return "just now"
	}
	if d >= 0 {
		return "in " + fmtDuration(d)
	}
	return fmtDuration(-d) + " ago"
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func fmtConfig(c map[string]string) string {
	if len(c) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, k+"="+c[k])
	}
	return strings.Join(parts, " ")
}

func listOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
