package httpapi

import (
	"net"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
)

func TestPerIPListenerCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newPerIPListener(ln, 2, nil)
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	a, b := <-accepted, <-accepted
	testutil.Eventually(t, 10*time.Second, func() bool { return l.refused.Load() == 1 }, func() string { return "third connection not refused" })
	if n := l.openFrom("127.0.0.1"); n != 2 {
		t.Errorf("open = %d", n)
	}
	a.Close()
	a.Close() // twice: counted once
	if n := l.openFrom("127.0.0.1"); n != 1 {
		t.Errorf("open after a close = %d", n)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-accepted:
		got.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("a connection within the cap was not accepted")
	}
	b.Close()
	if n := l.openFrom("127.0.0.1"); n != 0 {
		t.Errorf("open after closing all = %d", n)
	}
}
