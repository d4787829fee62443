// Command toxiproxy-server is Toxiproxy's own server with ichaos's stream toxics registered
// (see toxics.go). It takes the stock server's flags, so everything that starts a
// toxiproxy-server starts this one the same way.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func main() {
	host := flag.String("host", "localhost", "host for toxiproxy's API to listen on")
	port := flag.String("port", "8474", "port for toxiproxy's API to listen on")
	config := flag.String("config", "", "JSON file of proxies to create on startup")
	// Accepted for compatibility: the stock server parses it and uses it for nothing either.
	flag.Int64("seed", time.Now().UnixNano(), "ignored, as by the stock server")
	proxyMetrics := flag.Bool("proxy-metrics", false, "enable toxiproxy's proxy metrics")
	runtimeMetrics := flag.Bool("runtime-metrics", false, "enable Go runtime metrics")
	version := flag.Bool("version", false, "print the version")
	flag.Parse()
	// The API's /version says which toxics this server has: ichaos checks it before a scenario
	// with stream faults, so that a stock server is refused up front, not at the first fault.
	toxiproxy.Version = upstreamVersion + "+ichaos-stream." + toxicsVersion
	if *version {
		fmt.Printf("toxiproxy-server version %s\n", toxiproxy.Version)
		return
	}

	zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	logger := zerolog.New(os.Stdout).With().Timestamp().Logger()
	if level, ok := os.LookupEnv("LOG_LEVEL"); ok {
		if parsed, err := zerolog.ParseLevel(level); err == nil {
			logger = logger.Level(parsed)
		}
	}
	logger.Info().Str("version", toxiproxy.Version).Msg("Starting Toxiproxy")

	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), logger)
	if *proxyMetrics {
		server.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	}
	if *runtimeMetrics {
		server.Metrics.RuntimeMetrics = collectors.NewRuntimeMetricCollectors()
	}
	if *config != "" {
		server.PopulateConfig(*config)
	}
	go func() {
		if err := server.Listen(net.JoinHostPort(*host, *port)); err != nil {
			logger.Err(err).Msg("Server finished with error")
			os.Exit(1)
		}
	}()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	if err := server.Shutdown(); err != nil {
		logger.Err(err).Msg("Shutdown finished with error")
	}
}
