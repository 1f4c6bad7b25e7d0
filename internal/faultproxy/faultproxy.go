// Package faultproxy owns fault injection in front of a local AWS server: an
// HTTP reverse proxy that answers a chosen share of requests with the
// service's own throttling error, a 500, or after a delay. No local server
// throttles, so this is how tests and chaos runs show that kinactor backs
// off and recovers. It is for tests and chaos runs only.
package faultproxy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Service selects the throttling error the proxy speaks.
type Service int

// Services.
const (
	Kinesis Service = iota + 1
	DynamoDB
)

// Faults is what the proxy injects; shares are in [0,1].
type Faults struct {
	Throttle float64       // share answered with the service's throttling error (HTTP 400)
	Errors   float64       // share answered with HTTP 500 InternalFailure
	Latency  time.Duration // added to every forwarded request
	// Only, when set, limits faults to requests whose X-Amz-Target ends
	// with one of these operations (e.g. "GetRecords", "UpdateItem").
	Only []string
}

// Counts says what the proxy did.
type Counts struct {
	Requests, Throttled, Errored, Delayed int64
	ByOperation                           map[string]int64 // requests by X-Amz-Target operation
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	URL string // http://127.0.0.1:PORT, to use as the endpoint

	svc    Service
	srv    *http.Server
	ln     net.Listener
	rp     *httputil.ReverseProxy
	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand
	n      struct{ req, thr, err, del atomic.Int64 }
	ops    map[string]int64 // guarded by mu
}

// Start listens on a free loopback port and forwards to target.
func Start(svc Service, target string, seed uint64) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: bad target %q: %v", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{URL: "http://" + ln.Addr().String(), svc: svc, ln: ln, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Set replaces the faults in force.
func (p *Proxy) Set(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// Clear stops injecting faults.
func (p *Proxy) Clear() { p.Set(Faults{}) }

// Counts returns what the proxy did so far.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	ops := make(map[string]int64, len(p.ops))
	for k, v := range p.ops {
		ops[k] = v
	}
	p.mu.Unlock()
	return Counts{Requests: p.n.req.Load(), Throttled: p.n.thr.Load(), Errored: p.n.err.Load(), Delayed: p.n.del.Load(), ByOperation: ops}
}

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.n.req.Add(1)
	p.mu.Lock()
	f := p.faults
	applies := len(f.Only) == 0
	target := r.Header.Get("X-Amz-Target")
	if p.ops == nil {
		p.ops = map[string]int64{}
	}
	op := target
	if i := strings.LastIndexByte(op, '.'); i >= 0 {
		op = op[i+1:]
	}
	p.ops[op]++
	for _, op := range f.Only {
		if len(target) >= len(op) && target[len(target)-len(op):] == op {
			applies = true
		}
	}
	roll := p.rng.Float64()
	p.mu.Unlock()
	if applies {
		switch {
		case roll < f.Throttle:
			p.n.thr.Add(1)
			p.throttle(w)
			return
		case roll < f.Throttle+f.Errors:
			p.n.err.Add(1)
			writeError(w, http.StatusInternalServerError, "InternalFailure", "injected by faultproxy")
			return
		}
		if f.Latency > 0 {
			p.n.del.Add(1)
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
	}
	p.rp.ServeHTTP(w, r)
}

func (p *Proxy) throttle(w http.ResponseWriter) {
	switch p.svc {
	case DynamoDB:
		writeError(w, http.StatusBadRequest, "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException", "injected by faultproxy: throughput exceeded")
	default:
		writeError(w, http.StatusBadRequest, "ProvisionedThroughputExceededException", "injected by faultproxy: rate exceeded for shard")
	}
}

// writeError answers in the AWS JSON 1.1 protocol's error shape.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", typ)
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"__type":%q,"message":%q}`, typ, msg)
}
