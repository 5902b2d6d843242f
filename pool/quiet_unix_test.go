//go:build unix

package pool

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// socketPair returns both ends of a real loopback TCP connection.
func socketPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// quietWithin runs quiet(c) and fails the test if it has not returned
// after limit: quiet must never wait.
func quietWithin(t *testing.T, c net.Conn, limit time.Duration) bool {
	t.Helper()
	out := make(chan bool, 1)
	go func() { out <- quiet(c) }()
	select {
	case q := <-out:
		return q
	case <-time.After(limit):
		t.Fatalf("quiet still waiting after %v", limit)
		return false
	}
}

func TestQuiet_SeesAnOpenSilentSocketAsQuietAndASpokenOrClosedOneAsNot(t *testing.T) {
	client, server := socketPair(t)
	if !quietWithin(t, client, 10*time.Second) {
		t.Fatal("an open socket with nothing unread: quiet false, want true")
	}
	if _, err := server.Write([]byte("E")); err != nil {
		t.Fatal(err)
	}
	// The byte crosses loopback asynchronously: wait until it is readable
	// by peeking again, then check that the peek consumed nothing.
	deadline := time.Now().Add(10 * time.Second)
	for quiet(client) {
		if time.Now().After(deadline) {
			t.Fatal("a socket with a byte unread stayed quiet for 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(client, buf); err != nil || buf[0] != 'E' {
		t.Fatalf("read after peeking: %q, %v; want the byte the peek left", buf, err)
	}

	client2, server2 := socketPair(t)
	server2.Close()
	deadline = time.Now().Add(10 * time.Second)
	for quiet(client2) {
		if time.Now().After(deadline) {
			t.Fatal("a socket whose peer closed stayed quiet for 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQuiet_NeverWaitsForAReadInProgress holds the socket's read lock, as
// pgx's background reader can on an idle connection (a Read that lasts
// until the server speaks again), and peeks meanwhile. A peek that took the
// read lock (RawConn.Read) waited for that Read: a round stuck past its
// deadline and a Close that never ended, seen once in CI under the race
// detector.
func TestQuiet_NeverWaitsForAReadInProgress(t *testing.T) {
	client, _ := socketPair(t)
	raw, err := client.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	holding, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before socketPair's Close, which waits for the reader
	go func() {
		done <- raw.Read(func(uintptr) bool {
			close(holding)
			<-release // the read lock is held until the test lets go
			return true
		})
	}()
	<-holding
	q := quietWithin(t, client, 10*time.Second)
	letGo()
	if err := <-done; err != nil {
		t.Fatalf("the reader: %v", err)
	}
	if !q {
		t.Fatal("an open socket with nothing unread: quiet false, want true")
	}
}
