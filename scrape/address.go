package scrape

// AddressProbes is a snapshot of the agent's probe pools by address
// (/probe?target=HOST:PORT/DB&auth_module=NAME), for the metrics.
type AddressProbes struct {
	// Pools is the number of probe pools held for addresses; MaxPools the
	// configured bound (probe.max_targets).
	Pools, MaxPools int
	// Refused counts probes by address refused since start, by reason
	// (agent.Refused*). Every reason is present.
	Refused map[string]uint64
}
