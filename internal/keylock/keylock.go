// Package keylock serialises work per key (an instance id, an image
// reference, a URL) without holding a lock per key forever: an entry lives
// only while someone holds or waits for it.
package keylock

import "sync"

// Locker is a set of mutexes by key. The zero value is ready to use.
type Locker struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	mu    sync.Mutex
	users int // holders and waiters
}

// Lock locks key and returns its unlock function.
func (l *Locker) Lock(key string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*entry{}
	}
	e, ok := l.locks[key]
	if !ok {
		e = &entry{}
		l.locks[key] = e
	}
	e.users++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.users--; e.users == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
}

// Len is the number of keys held or waited for.
func (l *Locker) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.locks)
}
