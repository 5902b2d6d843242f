package agent

import (
	"context"
	"sync"

	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/scrape"
)

// crossCheck completes the rounds in out (of states, index for index) of
// application targets that have seen_as with their cross-check
// (scrape.CrossCheck). It joins the rounds of the servers and replicas the
// comparison needs: those of this request when it has them, so that both
// sides come from rounds started together, else through the usual
// coalescing (scrapeCurrent), bounded by ctx. Data flows one way: an
// application's comparison waits for server and replica rounds, and a round
// never waits for a comparison.
//
// A published Result is read-only, so a completed round is a shallow copy
// of the application's Result with Unaccounted set, for this request only.
func (a *Agent) crossCheck(ctx context.Context, states []*targetState, out []*scrape.Result) {
	var apps []int
	for i, st := range states {
		if len(st.cfg.SeenAs) > 0 && out[i] != nil && out[i].Up() {
			apps = append(apps, i)
		}
	}
	if len(apps) == 0 {
		return
	}
	rounds := make(map[string]*scrape.Result, len(out))
	for i, st := range states {
		if out[i] != nil {
			rounds[st.cfg.Name] = out[i]
		}
	}

	a.mu.RLock()
	all := make([]config.Target, 0, len(a.order))
	configs := map[string]config.Target{}
	for _, n := range a.order {
		t := a.targets[n].cfg
		all = append(all, t)
		if t.Kind == config.KindApplication {
			configs[n] = t
		}
	}
	need := map[string]*targetState{}
	for _, i := range apps {
		servers, replicas := scrape.CrossCheckPeers(states[i].cfg, all)
		for _, n := range append(servers, replicas...) {
			if _, have := rounds[n]; !have {
				if st, ok := a.targets[n]; ok {
					need[n] = st
				}
			}
		}
	}
	a.mu.RUnlock()

	var mu sync.Mutex
	var wg sync.WaitGroup
	for n, st := range need {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := a.scrapeCurrent(ctx, st)
			mu.Lock()
			rounds[n] = res
			mu.Unlock()
		}()
	}
	wg.Wait()

	for _, i := range apps {
		completed := *out[i]
		completed.Unaccounted = scrape.CrossCheck(states[i].cfg, out[i], rounds, configs)
		out[i] = &completed
	}
}
