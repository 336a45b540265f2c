package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/api"
)

// heartbeat keeps idle event streams open through proxies.
const heartbeat = 15 * time.Second

// jobEvents serves a job's events: as JSON after ?after=SEQ, or, when the
// client accepts text/event-stream, as server-sent events that start after
// Last-Event-ID (or ?after) and end once the job is finished. A job that
// waits for an operator keeps its stream open: an ack moves it on.
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	after, err := afterSeq(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error(), "")
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		evs, err := s.jobs.Events(r.Context(), id, after)
		if err == nil && len(evs) == 0 {
			_, err = s.jobs.Job(r.Context(), id) // an unknown job is a 404, not an empty list
		}
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, api.EventList{Events: append([]api.Event{}, evs...)})
		return
	}
	if _, err := s.jobs.Job(r.Context(), id); err != nil {
		writeErr(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, "streaming is not supported by this connection", "read ?after=SEQ as JSON instead")
		return
	}
	// Subscribe before reading what is stored, so nothing falls between.
	live, stop := s.jobs.Subscribe(id)
	defer func() { stop() }()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	last := after
	send := func(ev api.Event) (end bool, err error) {
		if ev.Seq <= last {
			return false, nil
		}
		last = ev.Seq
		b, err := json.Marshal(ev)
		if err != nil {
			return true, err
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Kind, b); err != nil {
			return true, err
		}
		return ev.Kind == api.EventJob && ev.Status.Finished(), nil
	}
	catchUp := func() (end bool) {
		evs, err := s.jobs.Events(r.Context(), id, last)
		if err != nil {
			return true
		}
		for _, ev := range evs {
			if end, err := send(ev); end || err != nil {
				return true
			}
		}
		flusher.Flush()
		return false
	}
	if catchUp() {
		flusher.Flush()
		return
	}
	// A client that asked for what follows the end of a finished job
	// has had everything.
	if j, err := s.jobs.Job(r.Context(), id); err != nil || j.Status.Finished() {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-live:
			if !ok { // fell behind: read the rest from the store, listen again
				live, stop = s.jobs.Subscribe(id)
				if catchUp() {
					return
				}
				continue
			}
			end, err := send(ev)
			flusher.Flush()
			if end || err != nil {
				return
			}
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func afterSeq(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("after")
	if v == "" {
		v = r.Header.Get("Last-Event-ID")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("after %q: want the sequence number of the last event seen", v)
	}
	return n, nil
}
