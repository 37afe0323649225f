package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "internal error")
		return
	}
	startBody(w, status, "application/json; charset=utf-8")
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apitypes.ErrorBody{Error: code, Message: msg})
}

// startBody writes the headers of a body of content type ct.
func startBody(w http.ResponseWriter, status int, ct string) {
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
}

// errorStatus maps an error from the services to an HTTP status and word.
// The message of a 4xx is the error's own text without the package prefix
// (no error of the domain or the lifecycle holds a token or state value);
// a 5xx says only "internal error".
func errorStatus(err error) (int, string, string) {
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "tokenline: "), "lifecycle: ")
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return http.StatusNotFound, "not_found", "no such connection"
	case errors.Is(err, domain.ErrDeleted):
		return http.StatusGone, "deleted", "the connection was deleted; its history is kept"
	case errors.Is(err, ErrProviderUnavailable):
		return http.StatusServiceUnavailable, "provider_unavailable", msg
	case errors.Is(err, lifecycle.ErrTooManyAttempts):
		return http.StatusTooManyRequests, "too_many_attempts", msg
	case errors.Is(err, lifecycle.ErrNoProvider):
		return http.StatusBadRequest, "unknown_provider", msg
	case errors.Is(err, domain.ErrInvalidCommand):
		return http.StatusBadRequest, "invalid_command", msg
	case errors.Is(err, domain.ErrInvalidTransition):
		return http.StatusConflict, "invalid_transition", msg
	case errors.Is(err, domain.ErrConflict):
		return http.StatusConflict, "conflict", "the connection changed concurrently; retry"
	case errors.Is(err, domain.ErrExists):
		return http.StatusConflict, "exists", "the connection already exists"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "unavailable", "the request timed out or was cancelled"
	}
	return http.StatusInternalServerError, "internal_error", "internal error"
}

func (s *Server) writeServiceError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := errorStatus(err)
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "route", r.Pattern, "error", err.Error())
	}
	writeError(w, status, code, msg)
}

// decodeJSON reads one JSON object from the body into v: unknown fields,
// trailing data, a body that is JSON but not an object ([], null, a
// string, a number), a wrong content type and bodies over 64 KiB are
// refused with the right 4xx (written to w; ok is false).
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be application/json")
			return false
		}
	}
	body := bufio.NewReader(r.Body)
	if kind := jsonKind(body); kind != "" {
		writeError(w, http.StatusBadRequest, "invalid_json", "the body must be a JSON object ({...}), not "+kind)
		return false
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is larger than %d bytes", maxBody))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "invalid_json", "the body is empty; a JSON object is required")
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		writeError(w, http.StatusBadRequest, "invalid_json", "the body is not valid JSON")
	case errors.As(err, &te):
		writeError(w, http.StatusBadRequest, "invalid_json", fmt.Sprintf("field %q has the wrong type", te.Field))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		writeError(w, http.StatusBadRequest, "unknown_field", strings.TrimPrefix(err.Error(), "json: ")+" (this API refuses unknown fields)")
	default:
		writeError(w, http.StatusBadRequest, "invalid_json", err.Error())
	}
	return false
}

// jsonKind peeks at the first value of a JSON body (after whitespace) and
// names it when it is not an object: "an array", "null", "a string", "a
// number", "a boolean". It returns "" for an object, and for an empty,
// unreadable or invalid body (the decoder then says what is wrong).
func jsonKind(b *bufio.Reader) string {
	for {
		c, err := b.ReadByte()
		if err != nil {
			return ""
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		_ = b.UnreadByte()
		switch {
		case c == '[':
			return "an array"
		case c == 'n':
			return "null"
		case c == '"':
			return "a string"
		case c == 't' || c == 'f':
			return "a boolean"
		case c == '-' || (c >= '0' && c <= '9'):
			return "a number"
		}
		return ""
	}
}

// connectionID returns the {id} path value if it is a canonical UUID;
// otherwise it answers 400.
func connectionID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !domain.ValidConnectionID(id) {
		writeError(w, http.StatusBadRequest, "invalid_id", "the connection id must be a lowercase UUID")
		return "", false
	}
	return id, true
}

// connectionRequest reads the connection id (connectionID) and then the
// JSON body (decodeJSON); ok is false when either was refused and answered.
func connectionRequest[T any](w http.ResponseWriter, r *http.Request) (id string, req T, ok bool) {
	if id, ok = connectionID(w, r); ok {
		ok = decodeJSON(w, r, &req)
	}
	return id, req, ok
}
