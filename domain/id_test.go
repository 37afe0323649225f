package domain_test

import (
	"strings"
	"testing"

	"github.com/tokenline/tokenline/domain"
)

func TestValidConnectionID(t *testing.T) {
	good := []string{
		"123e4567-e89b-12d3-a456-426614174000",
		"00000000-0000-0000-0000-000000000000",
		"ffffffff-ffff-ffff-ffff-ffffffffffff",
	}
	bad := []string{
		"",
		"123E4567-E89B-12D3-A456-426614174000",           // uppercase
		"123e4567e89b12d3a456426614174000",               // no dashes
		"123e4567-e89b-12d3-a456-42661417400",            // short
		"123e4567-e89b-12d3-a456-4266141740000",          // long
		"123e4567-e89b-12d3-a456_426614174000",           // wrong separator
		"123e4567-e89b-12d3-a4560426614174000-",          // dash misplaced
		"123e4567-e89b-12d3-a456-42661417400g",           // not hex
		"123e4567.e89b-12d3-a456-426614174000",           // NATS token separator
		"123e4567-e89b-12d3-a456-42661417400*",           // NATS wildcard
		"123e4567-e89b-12d3-a456-42661417400>",           // NATS wildcard
		"123e4567-e89b-12d3-a456-42661417400 ",           // space
		"{23e4567-e89b-12d3-a456-42661417400}",           // braces
		"123e4567-e89b-12d3-a456-42661417400\u00e9"[:36], // non-ASCII byte
	}
	for _, id := range good {
		if !domain.ValidConnectionID(id) {
			t.Errorf("ValidConnectionID(%q) = false", id)
		}
	}
	for _, id := range bad {
		if domain.ValidConnectionID(id) || domain.ValidConnectionIDBytes([]byte(id)) {
			t.Errorf("ValidConnectionID(%q) = true", id)
		}
	}
	// Every single-character corruption of a valid id is caught unless it
	// swaps one lowercase hex digit for another.
	base := good[0]
	for i := range base {
		for c := range 256 {
			id := base[:i] + string([]byte{byte(c)}) + base[i+1:]
			want := strings.IndexByte("0123456789abcdef", byte(c)) >= 0 && base[i] != '-' || c == '-' && base[i] == '-'
			if got := domain.ValidConnectionID(id); got != want {
				t.Errorf("ValidConnectionID(%q) = %v, want %v", id, got, want)
			}
			if got := domain.ValidConnectionIDBytes([]byte(id)); got != want {
				t.Errorf("ValidConnectionIDBytes(%q) = %v, want %v", id, got, want)
			}
		}
	}
}
