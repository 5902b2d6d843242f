package scrape

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// secret is in every input below where a secret can hide; RedactQuery
// must leave none of it.
const secret = "S3cr3t"

func TestRedactQuery_RemovesEveryLiteralAndCommentKeepsTheRest(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`ALTER ROLE app PASSWORD 'S3cr3t-AppRole';`, `ALTER ROLE app PASSWORD '***';`},
		{`CREATE ROLE x LOGIN ENCRYPTED PASSWORD 'SCRAM-SHA-256$4096:S3cr3t==$abc:def'`, `CREATE ROLE x LOGIN ENCRYPTED PASSWORD '***'`},
		{`create user u with password E'it\'s S3cr3t'`, `create user u with password E'***'`},
		{`SELECT 'it''s S3cr3t', 2`, `SELECT '***', 2`},
		{`SELECT * FROM dblink('host=db password=S3cr3t', 'select 1') AS t(x int)`, `SELECT * FROM dblink('***', '***') AS t(x int)`},
		{`SELECT pgp_sym_encrypt(data, 'S3cr3t') FROM t WHERE id = $1`, `SELECT pgp_sym_encrypt(data, '***') FROM t WHERE id = $1`},
		{`DO $$BEGIN EXECUTE 'ALTER ROLE a PASSWORD ''S3cr3t'''; END$$`, `DO $$***$$`},
		{`SELECT $fn$S3cr3t$fn$ || x$y FROM t`, `SELECT $$***$$ || x$y FROM t`},
		{"UPDATE t SET x = 1 -- S3cr3t\nWHERE y", "UPDATE t SET x = 1 /***/\nWHERE y"},
		{`/* S3cr3t /* nested */ still */ SELECT 1`, `/***/ SELECT 1`},
		{`SELECT "Weird ""Name""" FROM "t"`, `SELECT "Weird ""Name""" FROM "t"`},
		{`SELECT U&'d\0061t\+000061 S3cr3t'`, `SELECT U&'***'`},
		// Cut at MaxQueryLength inside a literal, a comment, a dollar quote.
		{`ALTER ROLE app PASSWORD 'S3cr3t-cut-her`, `ALTER ROLE app PASSWORD '***'`},
		{`SELECT 1 /* S3cr3t`, `SELECT 1 /***/`},
		{`SELECT $q$S3cr3t`, `SELECT $$***$$`},
		{`SELECT 1 -- S3cr3t`, `SELECT 1 /***/`},
		// Where 'a\' ends depends on standard_conforming_strings: either
		// way, the rest is hidden.
		{`SELECT 'C:\', 'S3cr3t'`, `SELECT '***'`},
		{`SELECT 'it\'s S3cr3t' FROM t`, `SELECT '***'`},
		{`SELECT e'a\\', 'S3cr3t'`, `SELECT e'***', '***'`},
		{`SELECT tE'x'`, `SELECT tE'***'`}, // not an E prefix: a standard literal after a word
		{``, ``},
	} {
		got := RedactQuery(c.in)
		assert.Equal(t, c.want, got, c.in)
		assert.NotContains(t, got, secret, c.in)
	}
}
