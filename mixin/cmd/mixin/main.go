// Command mixin writes poolwatch's Prometheus rules and Grafana dashboards
// from the mixin package:
//
//	go run ./mixin/cmd/mixin -out .                  # the shipped files (make mixin)
//	go run ./mixin/cmd/mixin -variant short -out DIR # short durations, for e2e and demo
//
// It writes DIR/alerts/*.rules.yml, DIR/dashboards/*.json and
// DIR/alertmanager.yml.example; the default variant also
// DIR/mixin/generated/*.json, which mixin.libsonnet imports.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/poolwatch/poolwatch/mixin"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mixin:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mixin", flag.ContinueOnError)
	variant := fs.String("variant", "default", "configuration to render: default or short")
	out := fs.String("out", ".", "directory to write alerts/, dashboards/ and alertmanager.yml.example into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg, err := mixin.Variant(*variant)
	if err != nil {
		return err
	}
	files, err := mixin.Files(cfg, *variant)
	if *variant == "default" {
		// The shipped files: the jsonnet mixin's generated JSON too.
		files, err = mixin.ShippedFiles()
	}
	if err != nil {
		return err
	}
	return mixin.Write(*out, files)
}
