package gossip

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// With a 32-byte key and a 40-character label, a broadcast of every size
// up to MaxBroadcast is delivered, one byte more is refused by Broadcast,
// and that limit is memberlist's real one (a framed message one byte over
// it, queued anyway, is never sent).
func TestBroadcastLimitWithKeyAndLabel(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 32)
	label := strings.Repeat("L", 40)
	var mu sync.Mutex
	got := map[int]bool{} // payload sizes b received from a, intact
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", SecretKey: key, Label: label, GossipInterval: 5 * time.Millisecond})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", SecretKey: key, Label: label, GossipInterval: 5 * time.Millisecond,
		Seeds: []string{a.m.Addr()}, OnEvent: func(e Event) {
			if e.Kind != MessageReceived || e.Member.Name != "a" || len(e.Payload) == 0 {
				return
			}
			if !bytes.Equal(e.Payload, bytes.Repeat([]byte{byte(len(e.Payload))}, len(e.Payload))) {
				return
			}
			mu.Lock()
			got[len(e.Payload)] = true
			mu.Unlock()
		}})
	eventually(t, 5*time.Second, "a and b joined", func() bool { return sees(a.m, "a", "b") && sees(b.m, "a", "b") })

	limit := a.m.MaxBroadcast()
	// 1400 − 2 (compound header) − 42 (label) − 29 (encryption) − 2 − 1
	// (compound entry, user message type) − 2 (frame: length, "a")
	if want := 1400 - 2 - (2 + 40) - 29 - 2 - 1 - 2; limit != want {
		t.Fatalf("MaxBroadcast = %d, want %d", limit, want)
	}
	over := bytes.Repeat([]byte{byte(limit + 1)}, limit+1)
	err := a.m.Broadcast(over)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), strconv.Itoa(limit+1)) || !strings.Contains(err.Error(), strconv.Itoa(limit)) {
		t.Fatalf("Broadcast of %d bytes (limit %d): err = %v, want ErrTooLarge naming both", limit+1, limit, err)
	}

	for n := 1; n <= limit; n++ {
		if err := a.m.Broadcast(bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatalf("Broadcast of %d bytes: %v", n, err)
		}
	}
	missing := func() []int {
		mu.Lock()
		defer mu.Unlock()
		var out []int
		for n := 1; n <= limit; n++ {
			if !got[n] {
				out = append(out, n)
			}
		}
		return out
	}
	t0 := time.Now()
	deadline := t0.Add(60 * time.Second)
	for len(missing()) > 0 {
		if time.Now().After(deadline) {
			m := missing()
			t.Fatalf("after 60s, %d sizes never delivered, e.g. %v", len(m), m[:min(len(m), 10)])
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("all %d sizes delivered in %v", limit, time.Since(t0))

	// The limit is exact: one byte more never leaves the queue.
	a.m.bq.QueueBroadcast(userBroadcast(a.m.frame(over)))
	never(t, time.Second, "a framed broadcast over the limit was delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got[limit+1]
	})
	if a.m.bq.NumQueued() == 0 {
		t.Fatal("the over-limit broadcast left the queue")
	}
}

// Send refuses a payload over MaxSend (memberlist's receiver would drop it)
// and delivers one at the limit, with a key and a label.
func TestSendLimit(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 32)
	label := strings.Repeat("L", 40)
	var mu sync.Mutex
	var sizes []int
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", SecretKey: key, Label: label})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", SecretKey: key, Label: label, Seeds: []string{a.m.Addr()},
		OnEvent: func(e Event) {
			if e.Kind == MessageReceived {
				mu.Lock()
				sizes = append(sizes, len(e.Payload))
				mu.Unlock()
			}
		}})
	eventually(t, 5*time.Second, "a and b joined", func() bool { return sees(a.m, "a", "b") && sees(b.m, "a", "b") })
	limit := a.m.MaxSend()
	if want := 20<<20 - 64 - 2; limit != want {
		t.Fatalf("MaxSend = %d, want %d", limit, want)
	}
	if err := a.m.Send("b", make([]byte, limit+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Send of %d bytes: err = %v, want ErrTooLarge", limit+1, err)
	}
	if err := a.m.Send("b", make([]byte, limit)); err != nil {
		t.Fatalf("Send of %d bytes: %v", limit, err)
	}
	eventually(t, 10*time.Second, "b receives the largest Send", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sizes) == 1 && sizes[0] == limit
	})
}
