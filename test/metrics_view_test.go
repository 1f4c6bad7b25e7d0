package test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
)

// scrape is a node's /metrics as scraped through Node.Handler, the way an
// operator's Prometheus sees it, parsed (clusterrun.ParseMetrics).
func scrape(t testing.TB, n *kinactor.Node) clusterrun.Metrics {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", rec.Code)
	}
	m, err := clusterrun.ParseMetrics(rec.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return m
}
