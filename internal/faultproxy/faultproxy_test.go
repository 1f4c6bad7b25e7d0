package faultproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestInjectsTheShareItIsTold(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer backend.Close()
	p, err := Start(Kinesis, backend.URL, 42)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Set(Faults{Throttle: 0.3, Errors: 0.1})
	const n = 2000
	var thr, errs, ok int
	for i := 0; i < n; i++ {
		resp, err := http.Post(p.URL, "application/x-amz-json-1.1", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 400 && strings.Contains(string(body), "ProvisionedThroughputExceededException"):
			thr++
		case resp.StatusCode == 500:
			errs++
		case resp.StatusCode == 200 && string(body) == "ok":
			ok++
		default:
			t.Fatalf("unexpected answer %d %s", resp.StatusCode, body)
		}
	}
	if f := float64(thr) / n; f < 0.26 || f > 0.34 {
		t.Errorf("throttled %.3f of requests, want ≈0.3", f)
	}
	if f := float64(errs) / n; f < 0.07 || f > 0.13 {
		t.Errorf("errored %.3f of requests, want ≈0.1", f)
	}
	c := p.Counts()
	if c.Requests != n || c.Throttled != int64(thr) || c.Errored != int64(errs) {
		t.Errorf("counts %+v disagree with what was seen (%d throttled, %d errors)", c, thr, errs)
	}
	// cleared: everything passes
	p.Clear()
	for i := 0; i < 50; i++ {
		resp, err := http.Get(p.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("after Clear: %d", resp.StatusCode)
		}
	}
}

func TestOnlyAndLatency(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	p, err := Start(DynamoDB, backend.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Set(Faults{Throttle: 1, Only: []string{"UpdateItem"}})
	do := func(target string) *http.Response {
		req, _ := http.NewRequest("POST", p.URL, strings.NewReader("{}"))
		req.Header.Set("X-Amz-Target", target)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := do("DynamoDB_20120810.UpdateItem"); r.StatusCode != 400 || !strings.Contains(r.Header.Get("X-Amzn-Errortype"), "ProvisionedThroughputExceeded") {
		t.Fatalf("UpdateItem not throttled: %d %s", r.StatusCode, r.Header.Get("X-Amzn-Errortype"))
	}
	if r := do("DynamoDB_20120810.GetItem"); r.StatusCode != 200 {
		t.Fatalf("GetItem throttled though Only is UpdateItem: %d", r.StatusCode)
	}
	p.Set(Faults{Latency: 80 * time.Millisecond})
	start := time.Now()
	do("DynamoDB_20120810.GetItem")
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("latency not added: %v", d)
	}
}
