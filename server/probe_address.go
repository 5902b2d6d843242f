package server

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolwatch/poolwatch/agent"
	"github.com/poolwatch/poolwatch/collector"
	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/scrape"
)

// probeAddress serves /probe?target=HOST:PORT/DB&kind=KIND&auth_module=NAME:
// one round of a target that is not in the configuration, with the
// credentials of the named auth module. It answers
//
//   - 403 when probes by address are off or the address matches none of
//     probe.allowed_targets: no connection is attempted;
//   - 400 for a malformed address, an unknown kind or auth module;
//   - 503 while probe.max_targets probe pools by address are held and the
//     address is new;
//
// each with a one-line reason, and otherwise 200 with the target's series,
// as for a configured target (a target that cannot be reached has
// poolwatch_target_up 0). Kinds are config's (config.AddressTarget decides
// which can be probed by address).
func (s *server) probeAddress(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ctx, cancel := s.budget(r)
	defer cancel()
	res, err := s.o.Agent.ProbeAddress(ctx, config.Kind(q.Get("kind")), q.Get("auth_module"), q.Get("target"))
	if err != nil {
		http.Error(w, err.Error(), addressStatus(err))
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector.NewTargets([]*scrape.Result{res}))
	s.serve(w, r, reg)
}

// addressStatus is the HTTP status of a refused probe by address.
func addressStatus(err error) int {
	switch {
	case errors.Is(err, config.ErrAddressProbesOff), errors.Is(err, config.ErrAddressNotAllowed):
		return http.StatusForbidden
	case errors.Is(err, agent.ErrTooManyAddressTargets), errors.Is(err, agent.ErrAgentClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, config.ErrBadAddress), errors.Is(err, config.ErrUnknownAuthModule):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// addressMetrics registers the probes-by-address series on the metrics
// path while they are enabled.
func (s *server) addressMetrics(reg *prometheus.Registry) {
	if st, on := s.o.Agent.AddressProbes(); on {
		reg.MustRegister(collector.NewAddressProbes(st))
	}
}
