package hostile_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// TestCulprit_APasswordInTheLeakedQueryNeverReachesTheLog leaves a session
// idle in a transaction after `ALTER ROLE app PASSWORD '…'`, as another
// application's admin job might: the agent logs the leak with the
// statement's first keyword and its query_id, and the password is in no
// log line; with log_query_text on a second target, the text is logged with
// the literal redacted. (Before the fix, the culprit line carried
// last_query="ALTER ROLE app PASSWORD '…';".)
func TestCulprit_APasswordInTheLeakedQueryNeverReachesTheLog(t *testing.T) {
	const rolePassword = "AppRolePassw0rd-LEAKME"
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{ExtraConf: map[string]string{"compute_query_id": "on"}})
	pg.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
	pg.CreateRole(t, "app", appPassword, "LOGIN")
	cfg := fmt.Sprintf(`defaults:
  leak_threshold: 1s
targets:
  - name: pg
    kind: postgres
    dsn: %[1]s
  - name: pg-text
    kind: postgres
    dsn: %[1]s
    log_query_text: true
`, pg.DSN("mon", monPassword, "postgres"))
	pw := testenv.StartPoolwatch(t, cfg)

	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.DSN(pg.SuperUser, pg.SuperPassword, "postgres")+"&application_name=role-rotator")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer func() { _ = admin.Close(ctx) }()
	if _, err := admin.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "ALTER ROLE app PASSWORD '"+rolePassword+"';"); err != nil {
		t.Fatal(err)
	}

	line := func(target string) *regexp.Regexp {
		return regexp.MustCompile(`target=` + target + ` msg="leaked connection" pool=server application_name=role-rotator .*query_keyword=ALTER query_id=-?\d+`)
	}
	eventually(t, 30*time.Second, "both targets log the culprit", func() (bool, string) {
		_, _, _ = request(httpClient, pw.URL+"/metrics")
		logs := pw.Logs()
		return line("pg").MatchString(logs) && line("pg-text").MatchString(logs), logs
	})
	logs := pw.Logs()
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "leaked connection") {
			t.Logf("%s", l)
		}
	}
	if strings.Contains(logs, rolePassword) {
		t.Errorf("the role's password is in the agent's log")
	}
	if strings.Contains(lineOf(logs, `target=pg msg="leaked connection"`), "last_query") {
		t.Errorf("the default culprit line carries query text")
	}
	if want := `last_query="ALTER ROLE app PASSWORD '***';"`; !strings.Contains(lineOf(logs, `target=pg-text msg="leaked connection"`), want) {
		t.Errorf("with log_query_text the culprit line lacks %s", want)
	}
	if _, err := admin.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	pw.StopAndCheck(t, monPassword, rolePassword)
}

// lineOf returns the first line of logs that contains s.
func lineOf(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
