package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPServer serves [admin] listen: /metrics, /healthz, /readyz, the status page (/) and
// /status.json. Its goroutines end with Close.
type HTTPServer struct {
	ln  net.Listener
	srv *http.Server
	src Source
}

// ListenHTTP opens addr for src's admin HTTP endpoints; call Serve to answer requests.
func ListenHTTP(addr string, src Source, logger *slog.Logger) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := &HTTPServer{ln: ln, src: src}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4, // a scrape walks every client: a few at once is plenty
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /{$}", servePage)
	mux.Handle("GET /status.json", &statusHandler{src: src, now: time.Now})
	h.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return h, nil
}

// Addr returns the address the server listens on.
func (h *HTTPServer) Addr() net.Addr { return h.ln.Addr() }

// Serve answers requests until Close; it returns nil after Close.
func (h *HTTPServer) Serve() error {
	if err := h.srv.Serve(h.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server, letting requests in progress finish for up to a second.
func (h *HTTPServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if h.srv.Shutdown(ctx) != nil {
		h.srv.Close()
	}
}

// healthz answers 200 while the process serves HTTP at all: a liveness probe.
func (h *HTTPServer) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz answers 200 when every endpoint accepts clients and a writer is known, else 503 with
// what is missing: a readiness probe (a load balancer sends no clients to a pgtide that would
// only queue them).
func (h *HTTPServer) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var missing []string
	if !h.src.Listening() {
		missing = append(missing, "endpoints not accepting clients")
	}
	if _, ok := h.src.Cluster().Writer(); !ok {
		missing = append(missing, "no writer known")
	}
	if len(missing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, m := range missing {
			fmt.Fprintln(w, m)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}
