package events

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// timeZ never accepts a time time.Time.UnmarshalJSON refuses, reads the
// zero time as zero, and accepts every UTC time MarshalJSON writes: over
// every month's last days in leap and common years (0000, 1900, 2000,
// 2024, 9999), the edges of the time of day, fractions of 0 to 10 digits,
// and 200,000 random strings of the form with digits anywhere.
func TestTimeZAgreesWithUnmarshalJSON(t *testing.T) {
	check := func(s string) {
		t.Helper()
		zero, ok := timeZ([]byte(s))
		var tm time.Time
		err := tm.UnmarshalJSON([]byte(`"` + s + `"`))
		if !ok {
			if err == nil && tm.Location() == time.UTC && len(s) <= len("2006-01-02T15:04:05.999999999Z") && s[len(s)-1] == 'Z' &&
				tm.Format(time.RFC3339Nano) == s {
				t.Errorf("timeZ refuses %q, a time MarshalJSON writes", s)
			}
			return
		}
		if err != nil {
			t.Fatalf("timeZ accepts %q, UnmarshalJSON refuses it: %v", s, err)
		}
		if zero != tm.IsZero() {
			t.Fatalf("timeZ(%q): zero %v, UnmarshalJSON's IsZero %v", s, zero, tm.IsZero())
		}
		if y := tm.UTC().Year(); y < 0 || y > 9999 {
			t.Fatalf("timeZ accepts %q, year %d", s, y)
		}
	}
	fracs := []string{"", ".", ".0", ".5", ".000000000", ".123456789", ".1234567890", ".12a", ",5"}
	for _, y := range []int{0, 1, 4, 100, 1900, 2000, 2023, 2024, 9999} {
		for m := 0; m <= 13; m++ {
			for _, d := range []int{0, 1, 28, 29, 30, 31, 32} {
				for _, hms := range []string{"00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60", "1a:00:00"} {
					for _, f := range fracs {
						check(fmt.Sprintf("%04d-%02d-%02dT%s%sZ", y, m, d, hms, f))
					}
				}
			}
		}
	}
	for _, s := range []string{"0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.001Z",
		"2024-02-29t00:00:00Z", "2024-02-29T00:00:00z", "2024-02-29 00:00:00Z", "2024-02-29T00:00:00+00:00",
		"+024-02-29T00:00:00Z", "-024-02-29T00:00:00Z", "2024-02-29T00:00:00", "2024-2-29T00:00:00Z"} {
		check(s)
	}
	r := rand.New(rand.NewPCG(3, 4))
	const form = "dddd-dd-ddTdd:dd:dd.dddddddddZ"
	for range 200000 {
		b := []byte(form[:19])
		if n := r.IntN(12); n > 0 {
			b = append(b, form[19:19+min(n, 11)]...)
		}
		b = append(b, 'Z')
		for i, c := range b {
			if c == 'd' {
				b[i] = byte('0' + r.IntN(10))
			}
		}
		if r.IntN(10) == 0 {
			b[r.IntN(len(b))] = "0123456789-:.TZ+ "[r.IntN(17)]
		}
		check(string(b))
	}
	// Every time MarshalJSON writes for UTC, over 100,000 random instants.
	for range 100000 {
		tm := time.Unix(r.Int64N(253402300800+62135596800)-62135596800, r.Int64N(1e9)).UTC()
		if r.IntN(4) == 0 {
			tm = tm.Truncate(time.Second)
		}
		b, err := tm.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		s := string(b[1 : len(b)-1])
		if zero, ok := timeZ([]byte(s)); !ok || zero != tm.IsZero() {
			t.Fatalf("timeZ(%q) = %v, %v", s, zero, ok)
		}
		check(s)
	}
}
