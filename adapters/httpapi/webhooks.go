package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

// WebhookService manages webhook subscriptions (issue 12). cmd/tokenline
// wires it to adapters/webhook. Errors wrap domain.ErrNotFound (no such
// subscription), domain.ErrDeleted, domain.ErrInvalidCommand (bad input,
// nothing changed), domain.ErrInvalidTransition or domain.ErrConflict.
type WebhookService interface {
	CreateWebhook(ctx context.Context, req apitypes.WebhookCreateRequest, actor string) (apitypes.Webhook, error)
	ListWebhooks(ctx context.Context) ([]apitypes.Webhook, error)
	GetWebhook(ctx context.Context, id string) (apitypes.Webhook, error)
	PauseWebhook(ctx context.Context, id, actor string) (apitypes.Webhook, error)
	ResumeWebhook(ctx context.Context, id, actor string) (apitypes.Webhook, error)
	DeleteWebhook(ctx context.Context, id, actor string) error
	RotateWebhookSecret(ctx context.Context, id, actor string) (apitypes.Webhook, error)
	WebhookDeliveries(ctx context.Context, id string) (apitypes.WebhookDeliveries, error)
	ReplayWebhook(ctx context.Context, id string, from, to time.Time) (apitypes.WebhookReplayResponse, error)
}

// webhookRoutes adds the /v1/webhooks routes (501 without a service).
func (s *Server) webhookRoutes(v1 *http.ServeMux) {
	route(v1, apitypes.RouteWebhooks, map[string]http.HandlerFunc{"GET": s.hook(s.handleWebhookList), "POST": s.hook(s.handleWebhookCreate)})
	route(v1, apitypes.RouteWebhook, map[string]http.HandlerFunc{"GET": s.hook(s.handleWebhookGet), "DELETE": s.hook(s.handleWebhookDelete)})
	route(v1, apitypes.RouteWebhookPause, map[string]http.HandlerFunc{"POST": s.hook(s.handleWebhookPause)})
	route(v1, apitypes.RouteWebhookResume, map[string]http.HandlerFunc{"POST": s.hook(s.handleWebhookResume)})
	route(v1, apitypes.RouteWebhookSecret, map[string]http.HandlerFunc{"POST": s.hook(s.handleWebhookRotate)})
	route(v1, apitypes.RouteWebhookDeliveries, map[string]http.HandlerFunc{"GET": s.hook(s.handleWebhookDeliveries)})
	route(v1, apitypes.RouteWebhookReplay, map[string]http.HandlerFunc{"POST": s.hook(s.handleWebhookReplay)})
}

func (s *Server) hook(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Webhooks == nil {
			writeError(w, http.StatusNotImplemented, "not_implemented", "webhooks are not enabled on this server")
			return
		}
		h(w, r)
	}
}

// webhookActor names who asked, for the subscription's events.
func webhookActor(r *http.Request) string {
	if ui, _ := r.Context().Value(sessionKey{}).(bool); ui {
		return "ui"
	}
	return "api"
}

func (s *Server) writeWebhookError(w http.ResponseWriter, r *http.Request, err error) {
	msg := strings.TrimPrefix(err.Error(), "webhook: ")
	switch {
	case errors.Is(err, domain.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no such webhook subscription")
	case errors.Is(err, domain.ErrDeleted):
		writeError(w, http.StatusGone, "deleted", "the webhook subscription was deleted; its history is kept")
	case errors.Is(err, domain.ErrInvalidCommand):
		writeError(w, http.StatusBadRequest, "invalid_command", msg)
	case errors.Is(err, domain.ErrInvalidTransition):
		writeError(w, http.StatusConflict, "invalid_transition", strings.TrimPrefix(msg, "tokenline: "))
	case errors.Is(err, domain.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", "the webhook subscription changed concurrently; try again")
	default:
		s.log.Error("request failed", "method", r.Method, "route", r.Pattern, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "internal_error", "internal error")
	}
}

func (s *Server) handleWebhookCreate(w http.ResponseWriter, r *http.Request) {
	var req apitypes.WebhookCreateRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.URL == "" {
		writeError(w, http.StatusBadRequest, "invalid_command", "url is required")
		return
	}
	if req.Provider != "" && s.cfg.Connections != nil && !s.cfg.Connections.HasProvider(req.Provider) {
		writeError(w, http.StatusBadRequest, "unknown_provider", "no provider named "+quote(req.Provider)+" is configured")
		return
	}
	hk, err := s.cfg.Webhooks.CreateWebhook(r.Context(), req, webhookActor(r))
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	w.Header().Set("Location", s.cfg.BaseURL+apitypes.Path(apitypes.RouteWebhook, hk.ID))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, hk)
}

func (s *Server) handleWebhookList(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Webhooks.ListWebhooks(r.Context())
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	if list == nil {
		list = []apitypes.Webhook{}
	}
	writeJSON(w, http.StatusOK, apitypes.WebhookList{Webhooks: list})
}

func (s *Server) handleWebhookGet(w http.ResponseWriter, r *http.Request) {
	hk, err := s.cfg.Webhooks.GetWebhook(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, hk)
}

func (s *Server) handleWebhookDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Webhooks.DeleteWebhook(r.Context(), r.PathValue("id"), webhookActor(r)); err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleWebhookPause(w http.ResponseWriter, r *http.Request) {
	s.webhookChange(w, r, s.cfg.Webhooks.PauseWebhook)
}

func (s *Server) handleWebhookResume(w http.ResponseWriter, r *http.Request) {
	s.webhookChange(w, r, s.cfg.Webhooks.ResumeWebhook)
}

func (s *Server) handleWebhookRotate(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	s.webhookChange(w, r, s.cfg.Webhooks.RotateWebhookSecret)
}

func (s *Server) webhookChange(w http.ResponseWriter, r *http.Request, f func(context.Context, string, string) (apitypes.Webhook, error)) {
	hk, err := f(r.Context(), r.PathValue("id"), webhookActor(r))
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, hk)
}

func (s *Server) handleWebhookDeliveries(w http.ResponseWriter, r *http.Request) {
	d, err := s.cfg.Webhooks.WebhookDeliveries(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleWebhookReplay(w http.ResponseWriter, r *http.Request) {
	var req apitypes.WebhookReplayRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.From.IsZero() {
		writeError(w, http.StatusBadRequest, "invalid_command", "from is required (RFC 3339 time)")
		return
	}
	var to time.Time
	if req.To != nil {
		to = *req.To
	}
	res, err := s.cfg.Webhooks.ReplayWebhook(r.Context(), r.PathValue("id"), req.From, to)
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// handleUIWebhooks is the web UI's Webhooks page (ui/webhooks.html,
// ui/static/webhooks.js): list, create, pause, resume, rotate, delete, and
// each subscription's deliveries.
func (s *Server) handleUIWebhooks(w http.ResponseWriter, r *http.Request) {
	if !s.uiSession(w, r) {
		return
	}
	s.renderPage(w, http.StatusOK, "webhooks.html", pageData{Title: "Webhooks", Page: "webhooks"})
}
