package collector

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolwatch/poolwatch/scrape"
)

// Descriptors of the probes by address, which carry no per-target labels
// (each held pool's own series are poolwatch_probe_pool_*): static.
var (
	addressPoolsDesc = prometheus.NewDesc("poolwatch_probe_address_pools",
		"Probe pools held for targets probed by address (/probe?target=HOST:PORT/DB&auth_module=NAME).", nil, nil)
	addressPoolsMaxDesc = prometheus.NewDesc("poolwatch_probe_address_pools_max",
		"The most probe pools held for addresses at once (probe.max_targets).", nil, nil)
	addressRefusedDesc = prometheus.NewDesc("poolwatch_probe_address_refused_total",
		"Probes by address refused, by reason: not_allowed (probe.allowed_targets), invalid (address, kind or auth module), max_targets.", []string{"reason"}, nil)
)

// AddressProbes collects the state of the agent's probes by address from
// one snapshot.
type AddressProbes struct{ s scrape.AddressProbes }

// NewAddressProbes returns a collector of s.
func NewAddressProbes(s scrape.AddressProbes) *AddressProbes { return &AddressProbes{s: s} }

// Describe sends the three descriptors.
func (*AddressProbes) Describe(ch chan<- *prometheus.Desc) {
	ch <- addressPoolsDesc
	ch <- addressPoolsMaxDesc
	ch <- addressRefusedDesc
}

// Collect sends the held pools, the bound and the refusals by reason.
func (c *AddressProbes) Collect(ch chan<- prometheus.Metric) {
	gauge(ch, addressPoolsDesc, float64(c.s.Pools))
	gauge(ch, addressPoolsMaxDesc, float64(c.s.MaxPools))
	for _, r := range slices.Sorted(maps.Keys(c.s.Refused)) {
		counter(ch, addressRefusedDesc, float64(c.s.Refused[r]), r)
	}
}
