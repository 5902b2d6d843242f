package scrape

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/stretchr/testify/assert"
)

func TestLeakLog_LogsEachLeakOnceWhileItLasts(t *testing.T) {
	var buf bytes.Buffer
	l := NewLeakLog(log.NewLogfmtLogger(&buf))
	a := Leak{ID: "4242@x", Pool: "billing", ApplicationName: "billing-api", User: "app", Database: "orders",
		ClientAddr: "10.0.0.5:51000", PID: 4242, Age: 42500 * time.Millisecond,
		QueryKeyword: "UPDATE", QueryID: "-851234", Query: "UPDATE t SET x = '***'"}
	b := Leak{ID: "0x55@y", Pool: "appdb/app", ApplicationName: "worker", User: "app", Database: "appdb",
		ClientAddr: "127.0.0.1:47098", PID: 23775, Age: time.Second}
	lines := func() []string { return strings.Split(strings.TrimSpace(buf.String()), "\n") }

	l.Observe([]Leak{a, b})
	assert.Equal(t, []string{
		`level=warn msg="leaked connection" pool=billing application_name=billing-api user=app database=orders client_addr=10.0.0.5:51000 pid=4242 held_for=43s query_keyword=UPDATE query_id=-851234 last_query="UPDATE t SET x = '***'"`,
		`level=warn msg="leaked connection" pool=appdb/app application_name=worker user=app database=appdb client_addr=127.0.0.1:47098 pid=23775 held_for=1s`,
	}, lines(), "both new: logged, the last query only where there is one")

	a.Age, b.Age = time.Minute, time.Minute
	l.Observe([]Leak{b, a})
	l.Observe([]Leak{a})
	assert.Len(t, lines(), 2, "still leaked: not logged again")

	l.Observe([]Leak{a, b})
	assert.Len(t, lines(), 3, "b went away and came back: logged again")
	assert.Contains(t, lines()[2], "pid=23775 held_for=1m0s")

	l.Observe(nil)
	l.Observe([]Leak{a})
	assert.Len(t, lines(), 4, "a round without leaks forgets them all")
}
