package collector

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolwatch/poolwatch/scrape"
)

// AddressProbes collects the state of the agent's probes by address from
// one snapshot. Its series carry no per-target labels (each held pool's
// own series are poolwatch_probe_pool_*).
type AddressProbes struct {
	s                        scrape.AddressProbes
	set                      *familySet
	pools, poolsMax, refused *family
}

// NewAddressProbes returns a collector of s.
func NewAddressProbes(s scrape.AddressProbes) *AddressProbes {
	set := newFamilySet()
	return &AddressProbes{
		s:   s,
		set: set,
		pools: set.add("poolwatch_probe_address_pools",
			"Probe pools held for targets probed by address (/probe?target=HOST:PORT/DB&auth_module=NAME).", false, nil, nil),
		poolsMax: set.add("poolwatch_probe_address_pools_max",
			"The most probe pools held for addresses at once (probe.max_targets).", false, nil, nil),
		refused: set.add("poolwatch_probe_address_refused_total",
			"Probes by address refused, by reason: not_allowed (probe.allowed_targets), invalid (address, kind or auth module), max_targets.", true, []string{"reason"}, nil),
	}
}

// Describe sends the three descriptors.
func (c *AddressProbes) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.set.families {
		ch <- f.desc
	}
}

// Collect sends the held pools, the bound and the refusals by reason.
func (c *AddressProbes) Collect(ch chan<- prometheus.Metric) {
	c.collect(&emitter{ch: ch})
}

// WriteText writes the series Collect sends into t (see Targets.WriteText).
func (c *AddressProbes) WriteText(t *Text) error {
	return writeText(t, c.set, c)
}

func (c *AddressProbes) collect(e *emitter) {
	e.gauge(c.pools, float64(c.s.Pools))
	e.gauge(c.poolsMax, float64(c.s.MaxPools))
	for _, r := range slices.Sorted(maps.Keys(c.s.Refused)) {
		e.counter(c.refused, float64(c.s.Refused[r]), r)
	}
}
