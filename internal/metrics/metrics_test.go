package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
	m.RecordsProcessed.WithLabelValues("orders", "shardId-000000000001").Add(3)
	m.GetRecordsLatency.Observe(0.25)
	var unhealthy error
	h := m.Handler(func() error { return unhealthy })

	code, body := get(t, h, "/metrics")
	if code != 200 || !strings.Contains(body, `kinactor_records_processed_total{shard="shardId-000000000001",stream="orders"} 3`) ||
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

// The seconds-since-progress gauge is labelled stream and shard, from the
// source's keys, read at scrape time.
func TestProgressSourceLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetProgressSource(func() map[ShardLabels]float64 {
		return map[ShardLabels]float64{
			{Stream: "orders", Shard: "shardId-000000000001"}:   1.5,
			{Stream: "payments", Shard: "shardId-000000000001"}: 4,
		}
	})
	want := `# HELP kinactor_shard_seconds_since_progress Seconds since each shard this node runs last made progress (a successful fetch or a processor answer).
# TYPE kinactor_shard_seconds_since_progress gauge
kinactor_shard_seconds_since_progress{shard="shardId-000000000001",stream="orders"} 1.5
kinactor_shard_seconds_since_progress{shard="shardId-000000000001",stream="payments"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kinactor_shard_seconds_since_progress"); err != nil {
		t.Error(err)
	}
}
