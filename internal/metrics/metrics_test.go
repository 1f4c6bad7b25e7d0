package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestHandlerServesOwnRegistryAndHealth(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.RecordsProcessed.WithLabelValues("shardId-000000000001").Add(3)
	m.GetRecordsLatency.Observe(0.25)
	var unhealthy error
	h := m.Handler(func() error { return unhealthy })

	code, body := get(t, h, "/metrics")
	if code != 200 || !strings.Contains(body, `kinactor_records_processed_total{shard="shardId-000000000001"} 3`) ||
		!strings.Contains(body, "kinactor_get_records_duration_seconds_bucket") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("/healthz while healthy: %d", code)
	}
	unhealthy = errors.New("node stopped")
	if code, body := get(t, h, "/healthz"); code != 503 || !strings.Contains(body, "node stopped") {
		t.Fatalf("/healthz while unhealthy: %d %q", code, body)
	}
}

func TestTwoNodesInOneProcessDoNotCollide(t *testing.T) {
	// Each node registers on its own registry: a second New must not panic.
	New(prometheus.NewRegistry())
	New(prometheus.NewRegistry())
}
