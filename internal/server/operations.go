package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/recovery"
)

// Operations is what the server needs of the daemon to start a plan's
// operations and show replication. A refused operation (a failover while
// one runs, a commit without a failover) is an error wrapping
// recovery.ErrConflict or ErrInvalid and changes nothing.
type Operations interface {
	Operate(ctx context.Context, op, plan string, req api.OperationRequest) (recovery.Job, error)
	Status(ctx context.Context) (api.StatusReport, error)
	Points(ctx context.Context, vm string) ([]api.Point, error)
}

var operations = []string{api.OpDrill, api.OpDrillCleanup, api.OpFailover, api.OpCommit, api.OpReprotect, api.OpFailback}

func (s *Server) routeOperations() {
	if s.ops == nil {
		return
	}
	s.mux.HandleFunc("GET /v1/status", s.require(RoleReader, s.status))
	s.mux.HandleFunc("GET /v1/vms/{vm}/points", s.require(RoleReader, s.points))
	s.mux.HandleFunc("POST /v1/plans/{plan}/{op}", s.require(RoleOperator, s.operate))
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.ops.Status(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) points(w http.ResponseWriter, r *http.Request) {
	ps, err := s.ops.Points(r.Context(), r.PathValue("vm"))
	if err != nil {
		writeErr(w, err)
		return
	}
	if ps == nil {
		ps = []api.Point{}
	}
	writeJSON(w, http.StatusOK, api.PointList{Points: ps})
}

func (s *Server) operate(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	if !slices.Contains(operations, op) {
		writeError(w, http.StatusNotFound, api.CodeNotFound, "no operation "+op, "operations: drill, drill-cleanup, failover, commit, reprotect, failback")
		return
	}
	var req api.OperationRequest
	if r.ContentLength != 0 {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, op+": bad body: "+err.Error(), `send {"planned":true}, {"point":"latest"}, {"drill":"JOB"} or nothing`)
			return
		}
	}
	j, err := s.ops.Operate(r.Context(), op, r.PathValue("plan"), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, j.API())
}

// refreshReplication sets standby_rpo_seconds and standby_shipped_bytes_total
// from the daemon's status at scrape time, so they are never stale.
func (s *Server) refreshReplication(ctx context.Context) {
	if s.ops == nil {
		return
	}
	st, err := s.ops.Status(ctx)
	if err != nil {
		return
	}
	s.shippedMu.Lock()
	defer s.shippedMu.Unlock()
	if s.shippedSeen == nil {
		s.shippedSeen = map[string]int64{}
	}
	for _, v := range st.VMs {
		s.SetRPO(v.VM, time.Duration(v.RPONanos))
		if d := v.Shipped - s.shippedSeen[v.VM]; d > 0 {
			s.AddShipped(v.VM, d)
			s.shippedSeen[v.VM] = v.Shipped
		}
	}
}
