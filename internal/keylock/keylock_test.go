package keylock

import (
	"sync"
	"testing"
	"time"
)

func TestSerialisesPerKeyAndForgets(t *testing.T) {
	var l Locker
	var mu sync.Mutex
	inside := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		for _, k := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				unlock := l.Lock(k)
				defer unlock()
				mu.Lock()
				inside[k]++
				if inside[k] != 1 {
					t.Errorf("%d holders of %q at once", inside[k], k)
				}
				mu.Unlock()
				time.Sleep(100 * time.Microsecond)
				mu.Lock()
				inside[k]--
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if n := l.Len(); n != 0 {
		t.Errorf("%d keys left after every holder unlocked, want 0", n)
	}
}

func TestDifferentKeysDoNotBlock(t *testing.T) {
	var l Locker
	unlockA := l.Lock("a")
	defer unlockA()
	done := make(chan struct{})
	go func() { l.Lock("b")(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("locking b waited for a")
	}
}
