package server

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"

	"github.com/prometheus/exporter-toolkit/web"

	"github.com/poolwatch/poolwatch/agent"
)

// landingTargets is the landing page's list of configured targets, rendered
// into exporter-toolkit's page as extra HTML. html/template escapes every
// value: target names, kinds and error texts come from the configuration
// and from servers.
var landingTargets = template.Must(template.New("targets").Parse(`
<h2>Targets</h2>
{{- if not .Targets }}
<p>No target is configured.</p>
{{- else }}
<table class="poolwatch-targets">
<thead><tr><th>Target</th><th>Kind</th><th>State</th><th>Last scrape</th><th>Pools</th><th></th></tr></thead>
<tbody>
{{- range .Targets }}
<tr>
<td>{{ .Name }}</td>
<td>{{ .Kind }}</td>
<td>{{ if not .Scraped }}not scraped yet{{ else if .Up }}up{{ else }}down: {{ .Error }}{{ end }}</td>
<td>{{ if .Scraped }}{{ .LastScrape.UTC.Format "2006-01-02T15:04:05Z07:00" }} ({{ .Duration }}){{ end }}</td>
<td>{{ if .Scraped }}{{ .Pools }}{{ end }}</td>
<td><a href="{{ .ProbeURL }}">probe</a></td>
</tr>
{{- end }}
</tbody>
</table>
<p>The state is that of the last scrape; this page never queries a target. "probe" scrapes that target now.</p>
{{- end }}
{{- if .AddressProbes }}
<p>Targets that are not configured can be probed by address:
<code>/probe?target=HOST:PORT/DATABASE&amp;kind=postgres&amp;auth_module=NAME</code>
(addresses allowed by <code>probe.allowed_targets</code> only).</p>
{{- end }}
`))

// landingRow is one target of the landing page.
type landingRow struct {
	agent.TargetStatus
	ProbeURL string
}

// landing serves the landing page at "/": links to every endpoint that
// answers a GET, and the configured targets with the state of their last
// scrape. It never links to the pprof endpoints, which poolwatch does not
// serve.
func (s *server) landing(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	var rows []landingRow
	for _, st := range s.o.Agent.Status() {
		rows = append(rows, landingRow{TargetStatus: st, ProbeURL: "probe?target=" + url.QueryEscape(st.Name)})
	}
	var extra bytes.Buffer
	data := struct {
		Targets       []landingRow
		AddressProbes bool
	}{rows, s.o.Agent.AddressProbesEnabled()}
	if err := landingTargets.Execute(&extra, data); err != nil {
		http.Error(w, "landing page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	page, err := web.NewLandingPage(web.LandingConfig{
		Name:        "poolwatch",
		Description: "Watches database connection pools: PgBouncer pools, PostgreSQL slots and application pools.",
		Version:     s.o.Version,
		Profiling:   "false",
		Links: []web.LandingLinks{
			{Address: s.o.TelemetryPath, Text: "Metrics"},
			{Address: "/-/healthy", Text: "Health"},
			{Address: "/-/ready", Text: "Readiness"},
		},
		ExtraHTML: extra.String(),
		ExtraCSS:  ".poolwatch-targets td, .poolwatch-targets th { padding: 0.2em 0.8em; text-align: left; }",
	})
	if err != nil {
		http.Error(w, fmt.Sprintf("landing page: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	page.ServeHTTP(w, r)
}
