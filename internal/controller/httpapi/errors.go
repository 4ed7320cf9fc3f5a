package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
)

// errBodyTimeout: the client did not send its request body in time (408,
// and the connection is closed).
var errBodyTimeout = errors.New("request body not received in time")

// fail answers err: the one mapping of errors to HTTP. Domain errors get
// the status errdefs.HTTPStatus gives them and their message; a body not
// received in time 408; a client that went away nothing; anything else
// 500 "internal error", logged.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch code := errdefs.HTTPStatus(err); {
	case errors.Is(err, errBodyTimeout):
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, err.Error())
	case errors.Is(err, context.Canceled):
		// the client went away; nothing useful to write
	case code >= 500 && code != http.StatusServiceUnavailable:
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	default:
		writeError(w, code, err.Error())
	}
}

// call decodes the request body into a Req, calls do with it and answers
// code with what it returns (or its error); ok reports success.
func call[Req, Resp any](a *API, w http.ResponseWriter, r *http.Request, code int, do func(context.Context, Req) (Resp, error)) (resp Resp, ok bool) {
	var req Req
	_, err := a.readBody(w, r, &req)
	if err == nil {
		resp, err = do(r.Context(), req)
	}
	a.reply(w, r, code, resp, err)
	return resp, err == nil
}

// reply answers v as JSON with code, or err if not nil.
func (a *API) reply(w http.ResponseWriter, r *http.Request, code int, v any, err error) {
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, code, v)
}

// done answers 204, or err if not nil.
func (a *API) done(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding response")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	data, _ := json.Marshal(api.Error{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

// readBody reads the request body, capped at MaxBodyBytes, and decodes it
// into v, one JSON object: unknown fields and trailing data are errors.
// v nil: the raw body is returned, not decoded.
func (a *API) readBody(w http.ResponseWriter, r *http.Request, v any) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return nil, errdefs.Errorf(errdefs.ErrTooLarge, "request body larger than %d bytes", tooBig.Limit)
		case isTimeout(err):
			return nil, errBodyTimeout
		}
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "reading body: %v", err)
	}
	if v == nil {
		return data, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid JSON body: trailing data")
	}
	return data, nil
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// readID reads a body {"id": "..."}: an id or a name, required.
func (a *API) readID(w http.ResponseWriter, r *http.Request) (string, error) {
	var req api.IDRequest
	if _, err := a.readBody(w, r, &req); err != nil {
		return "", err
	}
	if req.ID == "" {
		return "", errdefs.Errorf(errdefs.ErrInvalidArgument, "id: required")
	}
	return req.ID, nil
}
