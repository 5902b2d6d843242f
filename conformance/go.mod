module github.com/poolwatch/poolwatch/conformance

go 1.26.0

require (
	github.com/grafana/grafana-foundation-sdk/go v0.0.22
	github.com/poolwatch/poolwatch v0.0.0
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

replace github.com/poolwatch/poolwatch => ../
