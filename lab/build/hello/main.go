// hello: the lab's test workload (tests/lab: a Deployment behind a ClusterIP Service).
// GET / answers with the pod's name; GET /lookup?name=N resolves N through the pod's DNS
// (the cluster's CoreDNS), so one request through the Service checks both.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	http.HandleFunc("/lookup", func(w http.ResponseWriter, r *http.Request) {
		addresses, err := net.LookupHost(r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, addresses)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	if err := http.ListenAndServe(":8080", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
