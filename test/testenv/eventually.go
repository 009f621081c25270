package testenv

import (
	"testing"
	"time"
)

// Eventually polls f every 250 ms until it reports true, and fails the test after timeout with
// what it waited for and f's last description of what it saw.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() (ok bool, seen string)) {
	t.Helper()
	EventuallyEvery(t, timeout, 250*time.Millisecond, what, f)
}

// EventuallyEvery is Eventually, polling every interval.
func EventuallyEvery(t testing.TB, timeout, interval time.Duration, what string, f func() (ok bool, seen string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, seen)
		}
		time.Sleep(interval)
	}
}
