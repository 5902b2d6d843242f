// Command goapp is a small Go application for poolwatch's tests: a real
// connection pool exported by its real collector.
//
//	goapp -listen 127.0.0.1:PORT -dsn postgres://... -pool sql|pgxpool [-name orders] [-max 5]
//
// With -pool sql it opens database/sql (pgx's stdlib driver) and registers
// client_golang's collectors.NewDBStatsCollector(db, name); with -pool
// pgxpool it opens a pgxpool.Pool and registers
// github.com/IBM/pgxpoolprometheus's NewCollector(pool, {"db": name}): the
// collector has no pool label of its own.
//
//	GET  /ready          200
//	GET  /metrics        promhttp's exposition of the registry
//	GET  /state          the library's own numbers (db.Stats() or pool.Stat()) as JSON
//	POST /hold?n=K       check out K connections and keep them
//	POST /release        return every held connection
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"sync"
	"time"

	pgxpoolprometheus "github.com/IBM/pgxpoolprometheus"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	listen := flag.String("listen", "", "address to serve on")
	dsn := flag.String("dsn", "", "connection string")
	kind := flag.String("pool", "sql", "sql or pgxpool")
	name := flag.String("name", "orders", "the pool's name (db_name, or the db label)")
	maxConns := flag.Int("max", 5, "the pool's maximum (0: unlimited, sql only)")
	flag.Parse()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	var (
		mu      sync.Mutex
		release []func()
		hold    func(ctx context.Context) (func(), error)
		state   func() any
	)
	switch *kind {
	case "sql":
		db, err := sql.Open("pgx", *dsn)
		if err != nil {
			log.Fatal(err)
		}
		db.SetMaxOpenConns(*maxConns)
		db.SetMaxIdleConns(*maxConns)
		reg.MustRegister(collectors.NewDBStatsCollector(db, *name))
		hold = func(ctx context.Context) (func(), error) {
			c, err := db.Conn(ctx)
			if err != nil {
				return nil, err
			}
			if err := c.PingContext(ctx); err != nil {
				return nil, err
			}
			return func() { _ = c.Close() }, nil
		}
		state = func() any { return db.Stats() }
	case "pgxpool":
		cfg, err := pgxpool.ParseConfig(*dsn)
		if err != nil {
			log.Fatal(err)
		}
		cfg.MaxConns = int32(*maxConns)
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			log.Fatal(err)
		}
		reg.MustRegister(pgxpoolprometheus.NewCollector(pool, map[string]string{"db": *name}))
		hold = func(ctx context.Context) (func(), error) {
			c, err := pool.Acquire(ctx)
			if err != nil {
				return nil, err
			}
			return c.Release, nil
		}
		state = func() any {
			s := pool.Stat()
			return map[string]any{
				"AcquiredConns": s.AcquiredConns(), "IdleConns": s.IdleConns(), "TotalConns": s.TotalConns(),
				"MaxConns": s.MaxConns(), "CanceledAcquireCount": s.CanceledAcquireCount(),
			}
		}
	default:
		log.Fatalf("unknown -pool %q", *kind)
	}

	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { reply(w, 200, "ok") })
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/state", func(w http.ResponseWriter, _ *http.Request) { reply(w, 200, state()) })
	mux.HandleFunc("POST /hold", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		for range n {
			rel, err := hold(ctx)
			if err != nil {
				reply(w, 500, err.Error())
				return
			}
			mu.Lock()
			release = append(release, rel)
			mu.Unlock()
		}
		reply(w, 200, state())
	})
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		rels := release
		release = nil
		mu.Unlock()
		for _, rel := range rels {
			rel()
		}
		reply(w, 200, state())
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
